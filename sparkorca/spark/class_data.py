"""Class-data sharing for Spark's JVMs: their classes mapped from an archive.

A Spark JVM spends most of its start loading, verifying and linking some ten
thousand classes. Java (13+) can write the classes an application loaded into an
archive when it exits (``-XX:ArchiveClassesAtExit``) and map that archive at the
next start (``-XX:SharedArchiveFile``); Spark does neither by default. The first
context on a machine writes the archives as its JVMs exit at stop (the driver's,
and on local-cluster masters the executors', which run on this machine too);
every later one maps them. An archive's name is a digest of what must match for
the JVM to accept it (the java binary and version, Spark's jars, the extra class
path); the JVM checks it again and, on a mismatch, loads classes the usual way,
silently. ``SPARKORCA_CLASS_DATA_SHARING=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
from typing import Dict, List, Optional

from .java import spark_home

SWITCH_ENV = "SPARKORCA_CLASS_DATA_SHARING"
ROLES = ("driver", "executor")
# Options of a user's own that decide class sharing: theirs win.
USER_CDS_FLAGS = ("-Xshare", "SharedArchiveFile", "ArchiveClassesAtExit")
# Without these, a dump prints a warning per class it skips and a mismatched
# archive one line per start: the fallback is the JVM's plain start, nothing to report.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
KEEP = 2  # archives kept per role (one per Spark/Java install in use)
# The first bytes of a dynamic archive; HotSpot writes the header last, so a dump
# cut short (its JVM killed) lacks them.
MAGIC = bytes.fromhex("a8ab0bf0")


def enabled(environ=os.environ) -> bool:
    return environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


def archive_key(java: str, java_version: str, jars_dir: str, extra_class_path: str) -> str:
    """A digest of what the JVM checks an archive against. Reads metadata only."""
    try:
        jars = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                      for e in os.scandir(jars_dir) if e.name.endswith(".jar"))
    except OSError:
        jars = []
    text = json.dumps([os.path.realpath(java), java_version, os.path.realpath(jars_dir), jars,
                       extra_class_path])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ClassData:
    """The archive a ``role``'s JVMs map, or (``dump_to`` set) where they write one
    at exit, published under ``archive`` by ``publish`` once they have exited.
    Executors dump to one file each (Spark fills in ``{{EXECUTOR_ID}}``)."""

    role: str
    archive: str
    dump_to: Optional[str] = None

    @property
    def options_key(self) -> str:
        return f"spark.{self.role}.extraJavaOptions"

    def java_options(self) -> str:
        if self.dump_to:
            return f"-XX:ArchiveClassesAtExit={self.dump_to} {QUIET}"
        return f"-XX:SharedArchiveFile={self.archive} {QUIET}"

    def applied_to(self, conf: Dict[str, str]) -> Dict[str, str]:
        """``conf`` with the options added to the role's own."""
        options = " ".join(filter(None, [conf.get(self.options_key, ""), self.java_options()]))
        return {**conf, self.options_key: options}

    def dumps(self) -> List[str]:
        if not self.dump_to:
            return []
        return glob.glob(glob.escape(self.dump_to).replace("{{EXECUTOR_ID}}", "*"))

    def publish(self) -> None:
        """After the JVMs exited: move one whole dump into place (atomically: a
        concurrent start sees the whole archive or none), remove the rest, and drop
        the oldest archives."""
        for dump in self.dumps():
            if not os.path.exists(self.archive) and _is_whole(dump):
                with contextlib.suppress(OSError):
                    os.replace(dump, self.archive)
            with contextlib.suppress(OSError):
                os.remove(dump)
        _prune(os.path.dirname(self.archive), self.role)


def _is_whole(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _prune(directory: str, role: str) -> None:
    archives = sorted(glob.glob(os.path.join(directory, f"{role}-*.jsa")),
                      key=lambda p: os.stat(p).st_mtime, reverse=True)
    for old in archives[KEEP:]:
        with contextlib.suppress(OSError):
            os.remove(old)


def _remove_orphan_dumps(directory: str) -> None:
    """Dumps of contexts whose process is gone (killed before publishing)."""
    import psutil
    for dump in glob.glob(os.path.join(directory, "*.jsa.*.tmp")):
        pid = os.path.basename(dump).split(".jsa.", 1)[1].split("-")[0].split(".")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(dump)


def plan_class_data(role: str, conf: Dict[str, str], java: str, java_version: str,
                    directory: str) -> Optional[ClassData]:
    """What the ``role`` JVMs of ``conf`` do about class sharing; None: nothing."""
    assert role in ROLES, role
    own = conf.get(f"spark.{role}.extraJavaOptions", "")
    if not enabled() or any(flag in own for flag in USER_CDS_FLAGS):
        return None
    key = archive_key(java, java_version, os.path.join(spark_home(), "jars"),
                      conf.get(f"spark.{role}.extraClassPath", ""))
    archive = os.path.join(directory, f"{role}-{key}.jsa")
    _remove_orphan_dumps(directory)
    if os.path.exists(archive):
        return ClassData(role, archive)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None  # no writable cache: start the usual way
    own_id = "-{{EXECUTOR_ID}}" if role == "executor" else ""
    return ClassData(role, archive, dump_to=f"{archive}.{os.getpid()}{own_id}.tmp")


def plan_for_launch(master: str, conf: Dict[str, str], java: str, java_version: str,
                    directory: str) -> List[ClassData]:
    """The driver's, and on a local-cluster master (executors on this machine,
    ended by the driver JVM before it exits) the executors'."""
    roles = ["driver"] + (["executor"] if master.startswith("local-cluster") else [])
    found = (plan_class_data(role, conf, java, java_version, directory) for role in roles)
    return [c for c in found if c is not None]

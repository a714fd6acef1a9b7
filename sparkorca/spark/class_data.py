"""Class-data sharing for Spark's JVMs: their classes mapped from an archive.

A Spark JVM spends most of its start loading, verifying and linking some ten
thousand classes. Java (13+) can write the classes an application loaded into an
archive when it exits (``-XX:ArchiveClassesAtExit``) and map that archive at the
next start (``-XX:SharedArchiveFile``); Spark does neither by default. Writing
costs a few seconds, so a machine that starts Spark only once (a fresh container)
never does: an install's first context only leaves a marker, the second writes
the driver JVM's archive as the JVM exits at stop, and every later one maps it.
Executors take part on local-cluster masters (where they run on this machine)
unless ``SPARKORCA_CLASS_DATA_SHARING_EXECUTORS=0``. An archive's name is a digest
of what must match for the JVM to accept it (the java binary and version, Spark's
jars, the extra class path); the JVM checks it again and, on a mismatch, loads
classes the usual way, silently. ``SPARKORCA_CLASS_DATA_SHARING=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
from typing import TYPE_CHECKING, Dict, List, Optional

from .java import spark_home

if TYPE_CHECKING:
    from .conf import SparkLaunch

SWITCH_ENV = "SPARKORCA_CLASS_DATA_SHARING"
ROLES = ("driver", "executor")
EXECUTORS_ENV = "SPARKORCA_CLASS_DATA_SHARING_EXECUTORS"  # "0": the driver's only
SUBMIT_OPTS = "SPARK_SUBMIT_OPTS"  # read by spark-submit into the driver JVM's options
# Environment variables whose options every JVM started here takes.
JVM_OPTION_ENVS = (SUBMIT_OPTS, "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS")
DUMP_TIMEOUT = 30.0  # seconds a stopping executor JVM may take to finish its dump
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

    def java_options(self) -> str:
        if self.dump_to:
            return f"-XX:ArchiveClassesAtExit={self.dump_to} {QUIET}"
        return f"-XX:SharedArchiveFile={self.archive} {QUIET}"

    def applied_to(self, launch: "SparkLaunch") -> "SparkLaunch":
        """``launch`` with the options added. The driver's go in SPARK_SUBMIT_OPTS,
        which spark-submit adds to the driver JVM's: a ``--conf`` of
        spark.driver.extraJavaOptions would replace the one in spark-defaults.conf."""
        def joined(*parts: str) -> str:
            return " ".join(p for p in parts if p)
        if self.role == "driver":
            env = dict(launch.driver_env)
            env[SUBMIT_OPTS] = joined(env.get(SUBMIT_OPTS, os.environ.get(SUBMIT_OPTS, "")),
                                      self.java_options())
            return dataclasses.replace(launch, driver_env=env)
        key = "spark.executor.extraJavaOptions"
        return dataclasses.replace(launch, conf={**launch.conf, key: joined(
            launch.conf.get(key, ""), self.java_options())})

    def dumps(self) -> List[str]:
        if not self.dump_to:
            return []
        return glob.glob(glob.escape(self.dump_to).replace("{{EXECUTOR_ID}}", "*"))

    def writers(self) -> list:
        """The JVMs still writing a dump of ours (executors end after the driver)."""
        import psutil
        prefix = "-XX:ArchiveClassesAtExit=" + (self.dump_to or "").split("{{")[0]
        found = []
        for proc in psutil.process_iter():
            try:
                if any(arg.startswith(prefix) for arg in proc.cmdline()):
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def publish(self) -> None:
        """After the JVMs exited (waiting for stragglers up to DUMP_TIMEOUT): move
        one whole dump into place (atomically: a concurrent start sees the whole
        archive or none), remove the rest, and drop the oldest archives. A dump
        that fails (the JVM refused to write one) is not tried again."""
        if not self.dump_to:
            return
        import psutil
        try:
            psutil.wait_procs(self.writers(), timeout=DUMP_TIMEOUT)
            for dump in self.dumps():
                if not os.path.exists(self.archive) and _is_whole(dump):
                    os.replace(dump, self.archive)
                with contextlib.suppress(OSError):
                    os.remove(dump)
            if not os.path.exists(self.archive):
                open(_marker(self.archive, "failed"), "w").close()
            _prune(os.path.dirname(self.archive), self.role)
        except OSError:  # a concurrent start pruning too: the cache is only a cache
            pass


def _is_whole(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _marker(archive: str, kind: str) -> str:
    return f"{archive[:-len('.jsa')]}.{kind}"


def _prune(directory: str, role: str) -> None:
    for kind in ("jsa", "seen", "failed"):
        files = sorted(glob.glob(os.path.join(directory, f"{role}-*.{kind}")),
                       key=os.path.getmtime, reverse=True)
        for old in files[KEEP:]:
            with contextlib.suppress(OSError):
                os.remove(old)


def _class_path_blocks_dumps(extra_class_path: str) -> bool:
    """Whether the JVM's class path has a non-empty directory, which makes HotSpot
    refuse to dump ("Cannot have non-empty directory in paths"). Spark puts its
    conf dir first: empty or absent in pip's pyspark, full of templates in a
    Spark distribution."""
    conf_dir = os.environ.get("SPARK_CONF_DIR") or os.path.join(spark_home(), "conf")
    for path in [conf_dir, *extra_class_path.split(os.pathsep)]:
        with contextlib.suppress(OSError):
            if path and os.path.isdir(path) and os.listdir(path):
                return True
    return False


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
    own = " ".join([conf.get(f"spark.{role}.extraJavaOptions", ""),
                    conf.get(f"spark.{role}.defaultJavaOptions", ""),
                    *(os.environ.get(name, "") for name in JVM_OPTION_ENVS)])
    if (not enabled() or any(flag in own for flag in USER_CDS_FLAGS)
            # Spark splits java options on whitespace, quotes and all
            or any(c.isspace() or c in "\"'\\" for c in directory)):
        return None
    class_path = conf.get(f"spark.{role}.extraClassPath", "")
    key = archive_key(java, java_version, os.path.join(spark_home(), "jars"), class_path)
    archive = os.path.join(directory, f"{role}-{key}.jsa")
    _remove_orphan_dumps(directory)
    if os.path.exists(archive):
        return ClassData(role, archive)
    if os.path.exists(_marker(archive, "failed")) or _class_path_blocks_dumps(class_path):
        return None
    seen = _marker(archive, "seen")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(seen):
            open(seen, "w").close()  # this install's first start: a plain one
            return None
    except OSError:
        return None  # no writable cache: start the usual way
    own_id = "-{{EXECUTOR_ID}}" if role == "executor" else ""
    return ClassData(role, archive, dump_to=f"{archive}.{os.getpid()}{own_id}.tmp")


def plan_for_launch(master: str, conf: Dict[str, str], java: str, java_version: str,
                    directory: str) -> List[ClassData]:
    """The driver's; on a local-cluster master (executors on this machine) the
    executors' too, unless EXECUTORS_ENV is "0"."""
    roles = ["driver"] + (["executor"] if master.startswith("local-cluster")
                          and os.environ.get(EXECUTORS_ENV) != "0" else [])
    found = (plan_class_data(role, conf, java, java_version, directory) for role in roles)
    return [c for c in found if c is not None]

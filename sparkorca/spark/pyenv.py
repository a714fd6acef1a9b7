"""Pack the program's Python environment for executors, with the field's tools.

A venv is packed with venv-pack, a conda environment with conda-pack. Archives
are cached under a fingerprint of the environment (interpreter, installed
distributions, site-packages mtime), so a second start reuses the archive, and a
file lock keeps two programs from packing the same environment at once.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import logging
import os
import sys
import time
from typing import Optional

from filelock import FileLock

from ..errors import OrcaRuntimeError

log = logging.getLogger(__name__)


def env_kind(prefix: Optional[str] = None) -> Optional[str]:
    """"conda", "venv", or None for a Python that is neither."""
    prefix = prefix or sys.prefix
    if os.path.isdir(os.path.join(prefix, "conda-meta")):
        return "conda"
    if os.path.isfile(os.path.join(prefix, "pyvenv.cfg")):
        return "venv"
    return None


def _site_packages(prefix: str) -> list:
    return sorted(glob.glob(os.path.join(prefix, "lib", "python*", "site-packages")))


def env_fingerprint(prefix: Optional[str] = None) -> str:
    """A hash that changes when packages are installed into or removed from ``prefix``."""
    prefix = os.path.abspath(prefix or sys.prefix)
    h = hashlib.sha256()
    h.update(prefix.encode())
    sites = _site_packages(prefix)
    for site in sites:
        h.update(f"{site}:{os.stat(site).st_mtime_ns}".encode())
    dists = sorted(f"{d.metadata['Name']}=={d.version}"
                   for d in importlib.metadata.distributions(path=sites))
    h.update("\n".join(dists).encode())
    return h.hexdigest()[:16]


def cache_dir() -> str:
    """SPARKORCA_CACHE_DIR -> $XDG_CACHE_HOME/sparkorca -> ~/.cache/sparkorca."""
    explicit = os.environ.get("SPARKORCA_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sparkorca")


def archive_path_for(prefix: Optional[str] = None) -> str:
    """Where the archive of ``prefix`` is (or will be) cached. Reads metadata only."""
    prefix = prefix or sys.prefix
    kind = env_kind(prefix) or "python"
    return os.path.join(cache_dir(), "envs", f"{kind}-{env_fingerprint(prefix)}.tar.gz")


def pack_environment(prefix: Optional[str] = None, output: Optional[str] = None) -> str:
    """Pack ``prefix`` (the active environment by default) and return the archive path.

    Reuses the cached archive when the environment has not changed.

    Examples
    --------
    >>> archive = pack_environment()   # doctest: +SKIP
    >>> archive.endswith(".tar.gz")    # doctest: +SKIP
    True
    """
    prefix = os.path.abspath(prefix or sys.prefix)
    kind = env_kind(prefix)
    if kind is None:
        raise OrcaRuntimeError(
            f"the Python at {prefix} is neither a venv nor a conda environment, so it cannot "
            "be packed for the executors; run from a venv or conda env, or pass "
            "penv_archive='env.tar.gz' or python_location='/path/on/executors/bin/python'")
    output = output or archive_path_for(prefix)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with FileLock(output + ".lock"):
        if os.path.exists(output):
            log.info("reusing packed environment %s", output)
            return output
        tmp = f"{output}.{os.getpid()}.partial"
        start = time.monotonic()
        try:
            if kind == "conda":
                import conda_pack
                conda_pack.pack(prefix=prefix, output=tmp, format="tar.gz",
                                compress_level=1, force=True, ignore_editable_packages=True)
            else:
                import venv_pack
                venv_pack.pack(prefix=prefix, output=tmp, format="tar.gz",
                               compress_level=1, force=True)
            os.replace(tmp, output)
        except Exception as e:
            raise OrcaRuntimeError(f"packing the {kind} environment at {prefix} failed: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        log.info("packed %s environment %s in %.1fs -> %s", kind, prefix,
                 time.monotonic() - start, output)
    return output

"""This machine as nodes see it: the address to bind, scratch dirs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from typing import Iterator

from .._environ import temporary_environ

# the temp root a process had before redirect_tempdir() moved its temp files: node
# dirs (found by name from other processes) stay there
TEMP_ROOT_ENV = "SPARKORCA_TEMP_ROOT"


def node_ip() -> str:
    """The address other machines reach this one at, for binding services.

    ``SPARKORCA_NODE_IP`` wins. Otherwise a UDP connect (which sends nothing) asks
    the kernel which interface routes outwards; without a route (an offline
    laptop) the hostname's address is used.
    """
    env = os.environ.get("SPARKORCA_NODE_IP")
    if env:
        return env
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def temp_root() -> str:
    """The directory node scratch dirs go in: TMPDIR (tempfile's rules), else /tmp."""
    return os.environ.get(TEMP_ROOT_ENV) or tempfile.gettempdir()


def _tempdir_env(path: str) -> dict:
    return {TEMP_ROOT_ENV: temp_root(), "TMPDIR": path}


def redirect_tempdir(path: str) -> None:
    """Send the temp files of this process (``tempfile``), and of what it starts
    (TMPDIR), to ``path`` from now on; for a process that ends with its temp dir.

    Libraries that remove their temp files only when the interpreter exits (TF's
    autograph writes a source file per traced function) leave them in /tmp when
    the process ends with ``os._exit``, as pyspark's Python workers and our nodes
    do; in a dir we remove they go with it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ.update(_tempdir_env(path))
    tempfile.tempdir = path


@contextlib.contextmanager
def scratch_tempdir(prefix: str) -> Iterator[str]:
    """``redirect_tempdir`` to a fresh dir for the block only; the dir is removed after."""
    path = tempfile.mkdtemp(prefix=prefix, dir=temp_root())
    saved = tempfile.tempdir
    try:
        with temporary_environ(_tempdir_env(path)):
            tempfile.tempdir = path
            yield path
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(path, ignore_errors=True)


def node_dir(kind: str, cluster_id: str, name: object) -> str:
    """A node's scratch dir: known in advance, so processes on the same executor can
    find it (``sparkorca.ray.connect()``), and short, for the unix sockets inside."""
    return os.path.join(temp_root(), f"sparkorca-{kind}-{cluster_id}-{name}")

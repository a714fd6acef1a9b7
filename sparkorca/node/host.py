"""This machine as nodes see it: the address to bind, scratch dirs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from typing import Callable, Iterator

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


def redirect_tempdir(path: str) -> Callable[[], None]:
    """Send this process's temp files (``tempfile``, and its children's through
    TMPDIR) to ``path``, created if need be; returns what undoes it.

    Libraries that remove their temp files only when the interpreter exits (TF's
    autograph writes a source file per traced function) leave them in /tmp when
    the process ends with ``os._exit``, as pyspark's Python workers and our nodes
    do; in a dir we remove they go with it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("TMPDIR", TEMP_ROOT_ENV)}
    saved_dir = tempfile.tempdir
    os.environ[TEMP_ROOT_ENV] = temp_root()
    os.environ["TMPDIR"] = path
    tempfile.tempdir = path

    def undo() -> None:
        tempfile.tempdir = saved_dir
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return undo


@contextlib.contextmanager
def scratch_tempdir(prefix: str) -> Iterator[str]:
    """``redirect_tempdir`` to a fresh dir for the block; the dir is removed after."""
    path = tempfile.mkdtemp(prefix=prefix, dir=temp_root())
    undo = redirect_tempdir(path)
    try:
        yield path
    finally:
        undo()
        shutil.rmtree(path, ignore_errors=True)


def node_dir(kind: str, cluster_id: str, name: object) -> str:
    """A node's scratch dir: known in advance, so processes on the same executor can
    find it (``sparkorca.ray.connect()``), and short, for the unix sockets inside."""
    return os.path.join(temp_root(), f"sparkorca-{kind}-{cluster_id}-{name}")

"""The node's side of the hand-off with its launcher (a Spark task, or the driver).

The launcher writes, on the node's stdin, a header with two lengths, the
configuration (JSON) and an opaque payload (a TFCluster's cloudpickled map_fun).
The node answers one line on its stdout: ``READY <json>`` (what the launcher
should know: an address, a port) or ``FAILED <json>`` (why, and the tail of the
output that shows it). A node of a gang (a barrier stage's raylets) later writes
``RELEASED`` when the driver says every node of the gang is up. If the node dies
on its own while its launcher still listens, it writes ``EXITED <json>``. The
launcher sends ``DETACH`` on stdin to let the node outlive it; EOF before that
means the launcher died, and the node must stop.
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import select
import struct
import sys
import termios
from typing import Dict, Optional, Tuple

import psutil

READY = "READY"
FAILED = "FAILED"
EXITED = "EXITED"
RELEASED = "RELEASED"
DETACH = "DETACH"
HEADER = struct.Struct("!QQ")


def pack_launch(config_json: str, payload: bytes = b"") -> bytes:
    """What the launcher writes to the node's stdin."""
    data = config_json.encode()
    return HEADER.pack(len(data), len(payload)) + data + payload


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("stdin closed before the node's launch was read")
        buf += chunk
    return bytes(buf)


def read_launch(fd: int = 0) -> Tuple[str, bytes]:
    """The configuration (JSON text) and the payload the launcher sent."""
    config_len, payload_len = HEADER.unpack(_read_exact(fd, HEADER.size))
    return _read_exact(fd, config_len).decode(), _read_exact(fd, payload_len)


class Handoff:
    """The node's answers to its launcher, on what was its stdout.

    Taking the hand-off points fd 1 (and ``sys.stdout``) at stderr, so nothing a
    node prints (a map_fun's output, a library's) can be mistaken for an answer.
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = os.fdopen(1, "w", buffering=1)

    def _write(self, kind: str, info: Optional[dict]) -> None:
        try:
            self._out.write(f"{kind} {json.dumps(info or {})}\n")
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the launcher is gone (a detached Spark task): nobody to tell

    def ready(self, info: Optional[dict] = None) -> None:
        self._write(READY, info)

    def failed(self, why: str, tail: str = "") -> None:
        self._write(FAILED, {"why": why, "tail": tail})

    def exited(self, why: str, tail: str = "") -> None:
        self._write(EXITED, {"why": why, "tail": tail})

    def released(self) -> None:
        self._write(RELEASED, None)


def released_early(owner_pid: int, stdin_fd: int = 0) -> Optional[str]:
    """While the node is still starting: why it must give up, if it must (its owner
    exited, or the launching task ended and closed stdin). Reads nothing from stdin:
    EOF is a readable fd with no byte waiting."""
    if not psutil.pid_exists(owner_pid):
        return f"owner process {owner_pid} exited"
    if select.select([stdin_fd], [], [], 0)[0]:
        waiting = array.array("i", [0])
        fcntl.ioctl(stdin_fd, termios.FIONREAD, waiting)
        if waiting[0] == 0:
            return "the launching task ended before the node was up"
    return None


def wait_until_released(owner_pid: int, extra: Dict[int, str], stdin_fd: int = 0) -> str:
    """Block until a reason to stop comes; return it.

    Reasons: the owner process exits (watched through a pidfd, no polling);
    stdin closes before DETACH was read; or one of the ``extra`` file
    descriptors ({fd: reason}) becomes readable (a pidfd, a self-pipe).
    """
    try:
        owner_fd = os.pidfd_open(owner_pid)
    except OSError as e:
        return f"owner process {owner_pid} is gone ({e})"
    reasons = {owner_fd: "owner exited", **extra}
    poller = select.poll()
    for fd in [*reasons, stdin_fd]:
        poller.register(fd, select.POLLIN | select.POLLHUP)
    attached = True
    try:
        while True:
            for fd, _ in poller.poll():
                if fd != stdin_fd:
                    return reasons[fd]
                data = os.read(stdin_fd, 64)
                if not data:
                    poller.unregister(stdin_fd)
                    if attached:
                        return "the launching task ended before detaching"
                elif DETACH.encode() in data:
                    attached = False
    finally:
        os.close(owner_fd)

"""Supervision of the processes sparkorca starts: they die with their owner.

A child gets PR_SET_PDEATHSIG (killed when the thread that started it dies, so
start children from a long-lived thread), its own session so its whole tree can
be killed, and a log file whose tail goes into any error that reports it.
"""

from __future__ import annotations

import collections
import ctypes
import signal
import subprocess
from typing import Optional, Sequence

import psutil

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL this child when its parent dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # not Linux: the owner's explicit stop still kills the tree
        pass


def tail_file(path: str, lines: int = 100) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines)).rstrip()
    except OSError:
        return f"(no output: {path} could not be read)"


def kill_tree(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` and all its descendants, SIGKILL whatever outlives ``timeout``."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


class Child:
    """A supervised child process whose output goes to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: str,
                 env: Optional[dict] = None, cwd: Optional[str] = None):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True, preexec_fn=die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, lines: int = 100) -> str:
        return tail_file(self.log_path, lines)

    def exited(self) -> Optional[str]:
        """A message if the child has exited, else None (for wait_for's ``failed``)."""
        code = self.proc.poll()
        return None if code is None else f"{self.name} (pid {self.pid}) exited with code {code}"

    def stop(self, timeout: float = 10.0) -> None:
        kill_tree(self.proc.pid, timeout)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

"""Supervision of the processes sparkorca starts: they die with their owner.

A child gets PR_SET_PDEATHSIG (killed when the thread that started it dies, so
start children from a long-lived thread), its own session so its whole tree can
be killed, and a log file whose tail goes into any error that reports it.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import signal
import subprocess
import time
from typing import Optional, Sequence

import psutil

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except OSError:  # not Linux
        return False


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL this child when its parent dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # elsewhere the owner's stop kills the tree


def become_subreaper() -> bool:
    """Make this process the parent of its orphaned descendants (Linux), so that
    ``reap_descendants`` can wait for every one of them: orphans otherwise go to
    the machine's init, which may reap them a second or more later."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reap_descendants(timeout: float) -> bool:
    """Wait, up to ``timeout`` seconds, until this process has no child left,
    reaping each as it exits; True once none is left. For a subreaper whose
    descendants have been killed."""
    deadline = time.monotonic() + timeout
    interval = 0.005
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            continue
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # a poll for exits, not a synchronisation sleep
        interval = min(interval * 2, 0.1)


def tail_file(path: str, lines: int = 100) -> str:
    try:
        with open(path, "r", errors="replace") as f:
            return "".join(collections.deque(f, maxlen=lines)).rstrip()
    except OSError:
        return f"(no output: {path} could not be read)"


def search_file(path: str, pattern: "re.Pattern") -> Optional["re.Match"]:
    """``pattern`` searched in the file at ``path`` (None if absent or unreadable):
    how a child's readiness line is found in its log."""
    try:
        with open(path, errors="replace") as f:
            return pattern.search(f.read())
    except OSError:
        return None


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

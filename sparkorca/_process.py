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


# --- hand-off between a launcher (often a Spark task) and a supervised process ---
# The process reads its configuration from stdin, answers READY or FAILED <json>
# once on stdout, and stays tied to the launcher until it reads DETACH on stdin:
# EOF before that means the launcher died, and the process must stop.
READY = "READY"
FAILED = "FAILED"
DETACH = "DETACH"


def wait_until_released(owner_pid: int, extra: dict, stdin_fd: int = 0) -> str:
    """Block until a reason to stop comes; return it.

    Reasons: the owner process exits (watched through a pidfd, no polling);
    stdin closes before DETACH was read; or one of the ``extra`` file
    descriptors ({fd: reason}) becomes readable (a pidfd, a self-pipe).
    """
    import os
    import select
    try:
        owner_fd = os.pidfd_open(owner_pid)
    except (ProcessLookupError, OSError) as e:
        return f"owner process {owner_pid} is gone ({e})"
    reasons = {owner_fd: "owner exited", **extra}
    poller = select.poll()
    for fd in [*reasons, stdin_fd]:
        poller.register(fd, select.POLLIN | select.POLLHUP)
    attached = True
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


class RunningNode:
    """A launched supervised process (a Ray node runner, a TFCluster node) still
    tied to its launcher; ``temp_dir`` is its scratch, removed when it stops."""

    def __init__(self, proc: subprocess.Popen, temp_dir: str, what: str, ready_timeout: float):
        self.proc = proc
        self.temp_dir = temp_dir
        self.what = what
        self.ready_timeout = ready_timeout

    @property
    def runner_pid(self) -> int:
        return self.proc.pid

    def detach(self) -> None:
        """Let the process outlive its launcher (a Spark task)."""
        self.proc.stdin.write(f"{DETACH}\n".encode())
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait: the process stops what it runs and removes its temp dir."""
        import shutil
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def wait_ready(node: RunningNode, extra: float = 10.0, log_name: str = "runner.log") -> None:
    """Block until ``node`` says READY; stop it and raise with its output otherwise."""
    import json
    import os
    import select
    import time
    from .errors import OrcaRuntimeError, StartupTimeoutError
    deadline = time.monotonic() + node.ready_timeout + extra
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([node.proc.stdout], [], [], max(0.0, left))
        if not ready:
            node.stop()
            raise StartupTimeoutError(f"timed out after {node.ready_timeout + extra:g}s "
                                      f"waiting for {node.what} to start")
        chunk = node.proc.stdout.read1(4096)
        if not chunk:
            break
        line += chunk
    text = line.decode(errors="replace").strip()
    if text == READY:
        node.proc.stdout.close()
        return
    if text.startswith(FAILED):
        info = json.loads(text[len(FAILED):])
        node.stop()
        raise OrcaRuntimeError(f"{node.what} failed to start: {info['why']}\n"
                               f"--- last output ---\n{info['tail']}")
    runner_tail = tail_file(os.path.join(node.temp_dir, log_name))
    node.stop()
    raise OrcaRuntimeError(f"{node.what}: its supervisor exited unexpectedly (code "
                           f"{node.proc.poll()})\n--- last output ---\n{runner_tail}")

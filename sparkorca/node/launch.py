"""The launcher's side: start a node process, wait for its READY, detach, stop it.

Used inside Spark tasks (raylets, TFCluster nodes) and on the driver (the Ray
head, TFCluster ps nodes on the driver). See ``handoff`` for the protocol.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from typing import Dict, Optional

from .._process import tail_file
from ..errors import OrcaRuntimeError, StartupTimeoutError
from .config import NodeConfig
from .handoff import DETACH, EXITED, FAILED, READY, RELEASED, pack_launch


class RunningNode:
    """A launched node. ``temp_dir`` is its scratch, removed when it stops; the
    node's stderr goes to ``log_path`` (or to the launcher's own stderr)."""

    def __init__(self, proc: subprocess.Popen, temp_dir: str, what: str,
                 ready_timeout: float, log_path: Optional[str] = None):
        self.proc = proc
        self.temp_dir = temp_dir
        self.what = what
        self.ready_timeout = ready_timeout
        self.log_path = log_path
        self._buffer = b""
        self._exit_report: Optional[str] = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _tail(self) -> str:
        if self.log_path:
            return tail_file(self.log_path)
        return "(its output went to the launcher's log)"

    def _read_line(self, timeout: Optional[float]) -> Optional[str]:
        """One answer line; None when none came within ``timeout``; "" at EOF."""
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([stdout], [], [], left)
            if not ready:
                return None
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def wait_ready(self, extra: float = 10.0) -> Dict:
        """Block until the node says READY and return what it said; stop it and
        raise with its output otherwise."""
        limit = self.ready_timeout + extra
        line = self._read_line(limit)
        kind, _, body = (line or "").partition(" ")
        if kind == READY:
            return json.loads(body or "{}")
        if line is None:
            self.stop()
            raise StartupTimeoutError(f"timed out after {limit:g}s waiting for {self.what} to "
                                      f"start\n--- last output ---\n{self._tail()}")
        if kind == FAILED:
            info = json.loads(body)
            self.stop()
            raise OrcaRuntimeError(f"{self.what} failed to start: {info['why']}\n"
                                   f"--- last output ---\n{info['tail']}")
        tail = self._tail()
        self.stop()
        raise OrcaRuntimeError(f"{self.what}: its process exited unexpectedly (code "
                               f"{self.proc.poll()})\n--- last output ---\n{tail}")

    def wait_released(self, timeout: float) -> None:
        """After READY, for a node of a gang: block until it says the driver saw the
        whole gang up; stop it and raise otherwise (it exited, or ``timeout``)."""
        line = self._read_line(timeout)
        kind, _, body = (line or "").partition(" ")
        if kind == RELEASED:
            return
        if line is None:
            self.stop()
            raise StartupTimeoutError(f"timed out after {timeout:g}s waiting for the driver to "
                                      f"see every node of {self.what}'s gang up")
        why = json.loads(body)["why"] if kind == EXITED else f"code {self.proc.poll()}"
        tail = json.loads(body)["tail"] if kind == EXITED else self._tail()
        self.stop()
        raise OrcaRuntimeError(f"{self.what} exited before its gang was up: {why}\n"
                               f"--- last output ---\n{tail}")

    def exit_report(self) -> Optional[str]:
        """Why the node has died, with the output that shows it, or None while it
        runs (for ``wait_for``'s ``failed``). Never blocks."""
        if self._exit_report is None:
            line = self._read_line(0)
            kind, _, body = (line or "").partition(" ")
            if kind == EXITED:
                info = json.loads(body)
                self._exit_report = (f"{self.what} exited: {info['why']}\n"
                                     f"--- last output ---\n{info['tail']}")
            elif line == "" or self.proc.poll() is not None:
                self._exit_report = (f"{self.what} exited (code {self.proc.wait()})\n"
                                     f"--- last output ---\n{self._tail()}")
        return self._exit_report

    def detach(self) -> None:
        """Let the node outlive its launcher (a Spark task)."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(f"{DETACH}\n".encode())
            stdin.flush()
            stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait: the node stops what it runs and removes its temp dir."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def launch(module: str, config: NodeConfig, what: str, env: Optional[Dict[str, str]] = None,
           payload: bytes = b"", log_name: Optional[str] = None) -> RunningNode:
    """Start ``python -m module`` as the node for ``config`` in ``config.temp_dir``;
    call ``wait_ready`` next.

    The node gets a session of its own, so the signals Spark sends a task's process
    group never reach it. Its stderr goes to ``temp_dir/log_name``, or with
    ``log_name=None`` to the launcher's stderr (an executor's log).
    """
    try:
        os.mkdir(config.temp_dir, 0o700)
    except FileExistsError:
        raise OrcaRuntimeError(f"{what}: {config.temp_dir} exists already; is a second node "
                               "with this name being started on this machine?") from None
    log_path = os.path.join(config.temp_dir, log_name) if log_name else None
    stderr = open(log_path, "ab") if log_path else None
    try:
        proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr,
                                env={**os.environ, **env} if env else None,
                                start_new_session=True)
    finally:
        if stderr is not None:
            stderr.close()
    assert proc.stdin is not None
    proc.stdin.write(pack_launch(config.to_json(), payload))
    proc.stdin.flush()
    return RunningNode(proc, config.temp_dir, what, config.ready_timeout, log_path)

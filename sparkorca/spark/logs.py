"""Getting Spark's output to the user: the driver JVM's stdout/stderr, and with
``OrcaContext.log_output`` the Python output of every executor.

The gateway JVM's output is read by a pump thread (so the pipe never fills and
blocks the JVM); its tail goes into start-up errors. Executors' Python workers
connect back to a ``LogSink`` on the driver: a TCP server bound to the driver's
address that accepts a connection only after it presents the context's token,
and only ever reads text lines (nothing is unpickled).
"""

from __future__ import annotations

import collections
import hmac
import os
import secrets
import socketserver
import sys
import threading
from typing import Deque, Optional

TOKEN_ENV = "SPARKORCA_LOG_TOKEN"
ADDRESS_ENV = "SPARKORCA_LOG_ADDRESS"


class OutputPump:
    """Read a child's output from a pipe, keep its tail, forward every line."""

    def __init__(self, name: str, to_stdout: bool, tail_lines: int = 200):
        self.name = name
        self.to_stdout = to_stdout
        self._tail: Deque[str] = collections.deque(maxlen=tail_lines)
        self.read_fd, write_fd = os.pipe()
        self.write_fd: Optional[int] = write_fd
        self._thread = threading.Thread(target=self._run, name=f"sparkorca-{name}-output",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with os.fdopen(self.read_fd, "rb") as f:
            for raw in f:
                line = raw.decode(errors="replace")
                self._tail.append(line)
                if self.to_stdout:
                    # sys.stdout, not fd 1: in a notebook only sys.stdout is shown.
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    os.write(2, raw)

    def close_write_end(self) -> None:
        """Call once the child holds its own copy of the write end."""
        if self.write_fd is not None:
            os.close(self.write_fd)
            self.write_fd = None

    def tail(self) -> str:
        return "".join(self._tail).rstrip() or "(no output)"

    def join(self, timeout: float = 10.0) -> None:
        self.close_write_end()
        self._thread.join(timeout)


class _Handler(socketserver.StreamRequestHandler):
    server: LogSink

    def handle(self) -> None:
        self.request.settimeout(10)
        presented = self.rfile.readline(256).strip()
        if not hmac.compare_digest(presented, self.server.token.encode()):
            return  # unauthenticated: drop without reading anything more
        self.request.settimeout(None)
        for raw in self.rfile:
            self.server.emit(raw.decode(errors="replace"))


class LogSink(socketserver.ThreadingTCPServer):
    """Driver-side receiver of executor output lines, printed to sys.stdout."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str):
        super().__init__((host, 0), _Handler)
        self.token = secrets.token_hex(32)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="sparkorca-log-sink",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)
        return f"{host}:{port}"

    def emit(self, line: str) -> None:
        with self._lock:
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()

    def worker_env(self) -> dict:
        """Environment for executor Python workers (sent inside tasks, not in Spark conf)."""
        return {TOKEN_ENV: self.token, ADDRESS_ENV: self.address}

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


def log_daemon_source() -> str:
    """Path of the executor-side module that Spark runs as its Python daemon."""
    return os.path.join(os.path.dirname(__file__), "sparkorca_log_daemon.py")


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
import contextlib
import hmac
import os
import re
import secrets
import socketserver
import sys
import threading
from typing import Deque, Optional

TOKEN_ENV = "SPARKORCA_LOG_TOKEN"
ADDRESS_ENV = "SPARKORCA_LOG_ADDRESS"


# Spark's default log4j2 pattern: "26/11/23 23:25:54 ERROR TaskSetManager: ..."
_RECORD = re.compile(rb"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ")
# What follows a record as its own: Java and Python stack traces and exception lines.
_TRACE = re.compile(rb"^(\s|Caused by:|Suppressed:|Traceback \(most recent call last\)|"
                    rb"[\w.$]*(Exception|Error|Exit|Interrupt|Warning)\b(?! in thread))")
_CONSOLE_LEVELS = (None, b"ERROR", b"FATAL")


def _level_of(line: bytes, previous: Optional[bytes]) -> Optional[bytes]:
    """The level of the record ``line`` belongs to: its own, its record's for a stack
    trace line, None (not a log record) otherwise."""
    line = line.rsplit(b"\r", 1)[-1]  # a progress bar may have been drawn before it
    record = _RECORD.match(line)
    if record:
        return record.group(1)
    return previous if previous is not None and _TRACE.match(line) else None


class OutputPump:
    """Read a child's output from a pipe, keep its tail, forward every line.

    With ``log_file`` (Orca's redirect_spark_log) every line goes to that file and
    only error records (with their stack traces) and output that is not a log
    record reach the console.
    """

    def __init__(self, name: str, to_stdout: bool, tail_lines: int = 200,
                 log_file: Optional[str] = None):
        self.name = name
        self.to_stdout = to_stdout
        self.log_file = log_file
        self._tail: Deque[str] = collections.deque(maxlen=tail_lines)
        # opened here, so that a path that cannot be written fails the start
        self._log = open(log_file, "ab") if log_file else None
        self.read_fd, write_fd = os.pipe()
        self.write_fd: Optional[int] = write_fd
        self._thread = threading.Thread(target=self._run, name=f"sparkorca-{name}-output",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.ExitStack() as files:
            f = files.enter_context(os.fdopen(self.read_fd, "rb"))
            log = files.enter_context(self._log) if self._log is not None else None
            level = None  # of the record a line belongs to (stack traces follow theirs)
            for raw in f:
                self._tail.append(raw.decode(errors="replace"))
                if log is not None:
                    log.write(raw)
                    log.flush()
                    level = _level_of(raw, level)
                    if level not in _CONSOLE_LEVELS:
                        continue
                if self.to_stdout:
                    # sys.stdout, not fd 1: in a notebook only sys.stdout is shown.
                    sys.stdout.write(raw.decode(errors="replace"))
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



def set_driver_log_level(sc, level: str) -> None:
    """``sc.setLogLevel(level)``, and let the console show that level.

    A driver started as "pyspark-shell" filters its console at the shell's WARN
    threshold, which setLogLevel does not clear on Spark 4 (INFO records never
    reached the console or a redirected log); clear it as Spark 3's setLogLevel did.
    """
    sc.setLogLevel(level)
    with contextlib.suppress(Exception):  # the field is Spark-internal
        logging = getattr(sc._jvm.org.apache.spark.internal, "Logging$")
        getattr(getattr(logging, "MODULE$"), "sparkShellThresholdLevel_$eq")(None)

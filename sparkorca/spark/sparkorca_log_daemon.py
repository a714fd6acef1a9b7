"""Executor side of OrcaContext.log_output: Spark's Python daemon, plus forwarding.

Spark runs this file as its Python daemon (``spark.python.daemon.module``) from
the executor's working directory, where the driver shipped it with
``SparkContext.addFile``; so it must need nothing but the standard library and
pyspark. Each forked worker connects to the driver's log sink, presents the
token, and copies its stdout/stderr lines there as well as to the executor log.
"""

import io
import os
import socket
import sys

import pyspark.daemon as _daemon

_TOKEN_ENV = "SPARKORCA_LOG_TOKEN"
_ADDRESS_ENV = "SPARKORCA_LOG_ADDRESS"


class _Tee(io.TextIOBase):
    def __init__(self, original, sock, prefix):
        self._original = original
        self._sock = sock
        self._prefix = prefix
        self._pending = ""

    def writable(self):
        return True

    def write(self, text):
        self._original.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        if lines and self._sock is not None:
            data = "".join(f"{self._prefix}{line}\n" for line in lines)
            try:
                self._sock.sendall(data.encode("utf-8", "replace"))
            except OSError:
                self._sock = None  # the driver went away; keep the executor log only
        return len(text)

    def flush(self):
        self._original.flush()


def _forward_output():
    address = os.environ.get(_ADDRESS_ENV)
    token = os.environ.get(_TOKEN_ENV)
    if not address or not token:
        return
    host, port = address.rsplit(":", 1)
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(token.encode() + b"\n")
    except OSError as e:
        print(f"sparkorca: cannot forward output to the driver at {address}: {e}",
              file=sys.stderr)
        return
    prefix = f"(executor pid={os.getpid()}) "
    sys.stdout = _Tee(sys.stdout, sock, prefix)
    sys.stderr = _Tee(sys.stderr, sock, prefix)


_original_worker = _daemon.worker


def _worker(sock, authenticated):
    # Runs in the forked child, before pyspark's worker takes over.
    _forward_output()
    return _original_worker(sock, authenticated)


if __name__ == "__main__":
    _daemon.worker = _worker
    _daemon.manager()

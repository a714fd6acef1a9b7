"""Last line of cleanup: remove a context's files if its driver is killed.

``python -m sparkorca._reaper`` reads JSON lines on stdin: ``{"rm": path}`` and
``{"wait_pid": pid}`` register work, ``{"done": true}`` (an orderly stop, which
cleaned up itself) makes it exit. EOF without "done" means the driver died
(kill -9): the reaper waits for the registered processes (the driver's JVM) to
exit, so nothing writes into the paths any more, then removes them.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from typing import Optional

import psutil


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    paths, pids = [], []
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("done"):
            return 0
        if "rm" in msg:
            paths.append(msg["rm"])
        if "wait_pid" in msg:
            pids.append(msg["wait_pid"])
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=60)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    return 0


class Reaper:
    """The driver's handle: register what to clean; ``close()`` on orderly stop."""

    def __init__(self):
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-m", "sparkorca._reaper"], stdin=subprocess.PIPE,
            start_new_session=True)

    def _send(self, msg: dict) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.write((json.dumps(msg) + "\n").encode())
            self._proc.stdin.flush()

    def remove_on_crash(self, path: str) -> None:
        self._send({"rm": path})

    def wait_for_on_crash(self, pid: int) -> None:
        self._send({"wait_pid": pid})

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._send({"done": True})
            self._proc.stdin.close()
            self._proc.wait(30)
            self._proc = None


if __name__ == "__main__":
    sys.exit(main())

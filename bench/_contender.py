"""Run one benchmark contender in a fresh interpreter and read its RESULT line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def run_contender(code: str, python: str = sys.executable, timeout: float = 1800) -> dict:
    """Run ``code`` with ``python`` in a fresh process, HOME and working dir, and
    return the JSON of its ``RESULT {...}`` line. The executors run the same
    interpreter; the fresh HOME keeps contenders from sharing ~/.ray state."""
    env = dict(os.environ, PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    with tempfile.TemporaryDirectory(prefix="bench-") as home:
        env["HOME"] = home
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True,
                              timeout=timeout, cwd=home, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{python} failed (code {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                       f"{proc.stderr[-3000:]}")

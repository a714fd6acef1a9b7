"""Supervisor of one Ray node (head or raylet): ``python -m sparkorca.ray.node_runner``.

It reads its configuration as one JSON line on stdin (so the auth token is in
neither a command line nor Spark conf), runs ``ray start --block`` in a process
group of its own, prints ``READY`` or ``FAILED <why>`` once, and then keeps the
node alive until one of:

- its owner process exits (the executor JVM for a raylet, the driver for the
  head), watched through a pidfd, so no polling;
- its stdin reaches EOF before the launcher sent ``DETACH`` (the Spark task that
  started it failed or was killed, e.g. a barrier stage attempt that lost a peer);
- SIGTERM (stop_orca_context, or its parent dying: PR_SET_PDEATHSIG);
- the Ray node itself exits.

Then it stops the node's whole process group (Ray's own SIGTERM handling leaves
gcs_server/raylet behind), kills any straggler descendant, and removes the node's
temp dir (sessions, sockets, logs, spilled objects). Imports only the standard
library, psutil and sparkorca's small helpers: it must start fast inside a Spark task.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import psutil

from .._process import FAILED, READY, die_with_parent, tail_file, wait_until_released
from .._wait import wait_for
from ..errors import OrcaRuntimeError, StartupTimeoutError

READY_MARKER = "Ray runtime started."
RUNNER_PID_ENV = "SPARKORCA_RAY_RUNNER_PID"


def _stop_group(proc, grace):
    """Stop the node's process group: SIGTERM, then SIGKILL what is left.

    Only a worker node's raylet is worth waiting for (up to ``grace`` seconds):
    on SIGTERM it unregisters from the GCS, so the node shows as dead at once.
    gcs_server and ``ray start --block`` ignore SIGTERM in practice, and a head's
    raylet has no one left to tell, so the head uses no grace at all.
    """
    try:
        tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    _signal_all(proc.pid, tree, signal.SIGTERM)
    if grace > 0:
        psutil.wait_procs([p for p in tree if _name(p) == "raylet"], timeout=grace)
    _signal_all(proc.pid, tree, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def _name(p):
    try:
        return p.name()
    except psutil.Error:
        return ""


def _signal_all(pgid, tree, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for p in tree:  # descendants that left the group (setsid) still get the signal
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def _log_has(path, marker):
    try:
        with open(path, errors="replace") as f:
            return marker in f.read()
    except OSError:
        return False


def _wait_ready(proc, log_path, timeout):
    """None once ray start reports the node up, else why it did not."""
    try:
        wait_for(lambda: _log_has(log_path, READY_MARKER), timeout,
                 f"ray start to report '{READY_MARKER}'",
                 failed=lambda: None if proc.poll() is None
                 else f"ray start exited with code {proc.returncode}")
        return None
    except (OrcaRuntimeError, StartupTimeoutError) as e:
        return str(e)


def main():
    cfg = json.loads(sys.stdin.readline())
    temp_dir = cfg["temp_dir"]
    log_path = os.path.join(temp_dir, "ray-start.log")
    stop_read, stop_write = os.pipe()
    signal.signal(signal.SIGTERM, lambda *_: os.write(stop_write, b"x"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    env = {**os.environ, **cfg["env"], RUNNER_PID_ENV: str(os.getpid())}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cfg["argv"], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=die_with_parent)
    why = (None if psutil.pid_exists(cfg["owner_pid"])
           else f"owner process {cfg['owner_pid']} is gone")
    why = why or _wait_ready(proc, log_path, cfg["ready_timeout"])
    out = sys.stdout
    if why:
        out.write(f"{FAILED} {json.dumps({'why': why, 'tail': tail_file(log_path)})}\n")
        out.flush()
        _stop_group(proc, cfg["stop_grace"])
        shutil.rmtree(temp_dir, ignore_errors=True)
        return 1
    out.write(f"{READY}\n")
    out.flush()
    # Nothing more goes to the launcher; a closed pipe must not kill us.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    node_fd = os.pidfd_open(proc.pid)
    wait_until_released(cfg["owner_pid"], {node_fd: "the Ray node exited",
                                           stop_read: "asked to stop"})
    _stop_group(proc, cfg["stop_grace"])
    shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start one Ray node under a node_runner and wait for its READY. Shared by the
head (on the driver) and the raylets (inside Spark tasks).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Dict, List

from .._process import RunningNode
from ..errors import OrcaRuntimeError

TEMP_PREFIX = "sparkorca-ray-"


def node_temp_dir(cluster_id: str, node: str) -> str:
    """The temp dir of one node: known in advance, so a process on an executor
    can find its raylet (``ray.init(_temp_dir=...)``); short for unix sockets."""
    return os.path.join("/tmp", f"{TEMP_PREFIX}{cluster_id}-{node}")


def free_ports(count: int) -> List[int]:
    """``count`` distinct ports that are free on every address of this machine.

    The probes bind the wildcard address: Ray's agents bind a port on the node
    address *and* on 127.0.0.1, so a port free on one but held on the other (the
    Spark driver's loopback ports, say) would fail them. All probes stay open
    until every port is picked, so no port is handed out twice. The sockets are
    closed before Ray binds, so only a brief race with unrelated programs remains.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_start_argv(options: Dict[str, object]) -> List[str]:
    """``ray start --block`` with ``options`` as --key=value (True: a bare flag)."""
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv.append(flag if value is True else f"{flag}={value}")
    return argv


def start_node(options: Dict[str, object], env: Dict[str, str], owner_pid: int,
               ready_timeout: float, what: str, temp_dir: str,
               stop_grace: float = 3.0) -> RunningNode:
    """Launch a runner for ``ray start`` with ``options``; return once it is starting.

    Call ``wait_ready`` next. The runner gets its own session, so the signals
    Spark sends to a task's process group never reach it.
    """
    try:
        os.mkdir(temp_dir, 0o700)
    except FileExistsError:
        raise OrcaRuntimeError(f"{what}: {temp_dir} exists already; is a second raylet "
                               "of this cluster being started on the same executor?") from None
    options = {**options, "temp_dir": temp_dir}
    cfg = {"argv": ray_start_argv(options), "env": env, "owner_pid": owner_pid,
           "temp_dir": temp_dir, "ready_timeout": ready_timeout, "stop_grace": stop_grace}
    runner_log = open(os.path.join(temp_dir, "runner.log"), "ab")
    with runner_log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparkorca.ray.node_runner"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=runner_log, start_new_session=True)
    proc.stdin.write((json.dumps(cfg) + "\n").encode())
    proc.stdin.flush()
    return RunningNode(proc, temp_dir, what, ready_timeout)

"""Start one Ray node under a node_runner and wait for its READY. Shared by the
head (on the driver) and the raylets (inside Spark tasks).
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from typing import Dict, List

from .._process import tail_file
from ..errors import OrcaRuntimeError, StartupTimeoutError
from .node_runner import DETACH, FAILED, READY

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


@dataclasses.dataclass
class RunningNode:
    """A started node_runner; ``temp_dir`` holds the node's session and logs."""

    proc: subprocess.Popen
    temp_dir: str
    what: str
    ready_timeout: float

    @property
    def runner_pid(self) -> int:
        return self.proc.pid

    def detach(self) -> None:
        """Let the node outlive the process that launched it (a Spark task)."""
        self.proc.stdin.write(f"{DETACH}\n".encode())
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def terminate(self) -> None:
        """Ask the runner to stop its node (see ``stop`` to also wait for it)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the runner and wait: it stops the node and removes its temp dir."""
        self.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


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


def wait_ready(node: RunningNode, extra: float = 10.0) -> None:
    """Block until the runner says READY; raise with the node's log tail otherwise."""
    deadline = time.monotonic() + node.ready_timeout + extra
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([node.proc.stdout], [], [], max(0.0, left))
        if not ready:
            node.stop()
            raise StartupTimeoutError(f"timed out waiting for {node.what} to start")
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
                               f"--- last output of ray start ---\n{info['tail']}")
    runner_tail = tail_file(os.path.join(node.temp_dir, "runner.log"))
    node.stop()
    raise OrcaRuntimeError(f"{node.what}: its supervisor exited unexpectedly\n"
                           f"--- last output ---\n{runner_tail}")

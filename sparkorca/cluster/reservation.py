"""The driver's rendezvous and control server of a TFCluster.

Bound to the driver's address; every node authenticates with the cluster secret
(see ``channel``) before its first message is read, and messages are JSON, never
pickle. Nodes register their host, port and feed socket; once every expected
node has, each gets the whole cluster. The connection then stays open: the
driver sends flush / replay / end / stop, nodes report done / error / replayed,
and a connection that closes without a result means the node was lost.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from ..errors import OrcaRuntimeError, StartupTimeoutError
from .channel import Channel
from .roles import NodeRole

log = logging.getLogger(__name__)

FINAL = ("done", "error", "lost")


class NodeState:
    def __init__(self, role: NodeRole):
        self.role = role
        self.info: Optional[dict] = None
        self.channel: Optional[Channel] = None
        self.state = "pending"  # pending -> running -> done | error | lost | stopped
        self.traceback: Optional[str] = None
        self.replayed: Dict[str, dict] = {}
        self.connected = False  # the node process holds its connection until it exits

    def describe(self) -> str:
        where = (f" on executor {self.info['executor_id']} at {self.info['host']}"
                 if self.info else "")
        return f"node {self.role.worker_num} ({self.role.job_name}:{self.role.task_index}{where})"


class ReservationServer:
    def __init__(self, host: str, secret: bytes, roles: Sequence[NodeRole]):
        self.secret = secret
        self.nodes: Dict[int, NodeState] = {r.worker_num: NodeState(r) for r in roles}
        self.cond = threading.Condition()
        self.refused = 0
        self.closing = False
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.address = (host, self._sock.getsockname()[1])
        threading.Thread(target=self._accept_loop, name="sparkorca-reservation",
                         daemon=True).start()

    # -- serving ------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name="sparkorca-reservation-conn").start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            channel = Channel.accept(sock, self.secret)
            msg = channel.recv()
        except (OSError, ConnectionError, ValueError) as e:
            with self.cond:
                self.refused += 1
            log.warning("TFCluster reservation refused a connection: %s", e)
            sock.close()
            return
        node = self.nodes.get(msg.get("worker_num")) if msg.get("type") == "register" else None
        if node is None or node.info is not None:
            channel.send({"type": "abort", "why": f"unexpected registration {msg}"})
            channel.close()
            return
        with self.cond:
            node.info = {k: msg[k] for k in ("worker_num", "job_name", "task_index", "host",
                                             "port", "tb_port", "executor_id", "socket", "pid")}
            node.channel = channel
            node.connected = True
            node.state = "running"
            everyone = all(n.info is not None for n in self.nodes.values())
            self.cond.notify_all()
        if everyone:
            info = self.cluster_info()
            for n in self.nodes.values():
                self._send(n, {"type": "cluster", "cluster_info": info})
        self._read_loop(node)

    def _read_loop(self, node: NodeState) -> None:
        while True:
            try:
                msg = node.channel.recv()
            except (OSError, ConnectionError, ValueError):
                with self.cond:
                    node.connected = False
                    if node.state == "running":
                        node.state = "stopped" if self.closing else "lost"
                    self.cond.notify_all()
                return
            with self.cond:
                kind = msg.get("type")
                if kind == "done":
                    node.state = "done"
                elif kind == "error":
                    node.state = "error"
                    node.traceback = str(msg.get("traceback"))
                elif kind == "replayed":
                    node.replayed[msg["feed_id"]] = msg
                self.cond.notify_all()

    def _send(self, node: NodeState, msg: dict) -> None:
        try:
            node.channel.send(msg)
        except (OSError, ConnectionError, AttributeError):
            pass  # the read loop reports the node as lost

    # -- what the driver asks -----------------------------------------------
    def cluster_info(self) -> List[dict]:
        return [self.nodes[k].info for k in sorted(self.nodes)]

    def send(self, worker_nums, msg: dict) -> None:
        for k in worker_nums:
            self._send(self.nodes[k], msg)

    def wait(self, predicate: Callable[[], bool], timeout: Optional[float],
             failed: Callable[[], Optional[str]] = lambda: None) -> Optional[str]:
        """Wait until ``predicate()`` holds (checked under the lock, woken by every
        node message) or ``failed()`` says why not.

        Returns None on success, else the failure text, or "timeout" once
        ``timeout`` seconds (None: no limit) have passed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                if predicate():
                    return None
                why = failed()
                if why:
                    return why
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return "timeout"
                self.cond.wait(0.5 if left is None else min(0.5, left))

    def wait_registered(self, timeout: float, failed: Callable[[], Optional[str]],
                        progress: Callable[[], str]) -> List[dict]:
        why = self.wait(lambda: all(n.info is not None for n in self.nodes.values()),
                        timeout, failed)
        if why is None:
            return self.cluster_info()
        missing = [n.describe() for n in self.nodes.values() if n.info is None]
        text = (f"TFCluster reservation: {len(missing)} of {len(self.nodes)} node(s) never "
                f"registered: {', '.join(missing)}. {progress()}")
        if why == "timeout":
            raise StartupTimeoutError(f"timed out after reservation_timeout={timeout:g}s. {text}")
        raise OrcaRuntimeError(f"{text}\n{why}")

    def failures(self) -> List[str]:
        """Every node's error traceback or loss, for the driver's exceptions."""
        out = []
        with self.cond:
            for n in self.nodes.values():
                if n.state == "error":
                    out.append(f"map_fun failed on {n.describe()}:\n{n.traceback}")
                elif n.state == "lost":
                    out.append(f"{n.describe()} was lost: its connection to the driver "
                               "closed without a result (its executor or process died)")
        return out

    def states(self) -> Dict[int, str]:
        with self.cond:
            return {k: n.state for k, n in self.nodes.items()}

    def close(self) -> None:
        with self.cond:
            self.closing = True
        self._sock.close()
        for n in self.nodes.values():
            if n.channel is not None:
                n.channel.close()

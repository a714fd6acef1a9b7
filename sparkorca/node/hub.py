"""The driver's control server: every node of a cluster registers here and keeps
its connection for as long as it runs.

Bound to the driver's address; a node authenticates with the cluster secret
(see ``channel``) before its first message is read, and messages are JSON, never
pickle. Over the connection the driver sends commands (``stop``, and a feature's
own), and the node reports ``done``, ``error`` (a traceback) or ``exited`` (why
its process ended on its own, with the log tail that shows it). A connection
that closes without such a report means the node was lost: its executor or its
process died.
"""

from __future__ import annotations

import enum
import logging
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .channel import Channel

log = logging.getLogger(__name__)


class NodeState(str, enum.Enum):
    PENDING = "pending"   # expected, not registered yet
    RUNNING = "running"
    DONE = "done"         # its work ended well
    ERROR = "error"       # its work raised
    EXITED = "exited"     # its process ended on its own
    LOST = "lost"         # its connection closed without a report
    STOPPED = "stopped"   # it went away while the hub was closing


FINAL = frozenset({NodeState.DONE, NodeState.ERROR, NodeState.EXITED, NodeState.LOST})


class NodeLink:
    """What the driver knows of one node."""

    def __init__(self, key: str, label: Optional[str] = None):
        self.key = key
        self.label = label or f"node {key}"
        self.info: Optional[dict] = None   # what the node registered with
        self.channel: Optional[Channel] = None
        self.state = NodeState.PENDING
        self.report: Optional[str] = None  # an error's traceback, or why it exited
        self.connected = False
        self.stopping = False  # the driver told it to stop: its going away is no loss
        self.replies: Dict[str, dict] = {}  # a feature's keyed reports (e.g. "replayed")
        self.result: Any = None  # what its work returned (JSON), with "done"

    def describe(self) -> str:
        info = self.info or {}
        where = (f" on executor {info['executor_id']} at {info['host']}"
                 if "executor_id" in info and "host" in info else "")
        return f"{self.label}{where}"


class NodeHub:
    """Accepts, authenticates and tracks the nodes of one cluster.

    ``expected`` are the (key, label) of nodes that must register; with
    ``accept_new`` any other key may join too (raylets of executors added later).
    ``work`` names what a node runs, for error texts ("map_fun failed on ...").
    """

    def __init__(self, host: str, secret: bytes, expected: Iterable[Tuple[str, str]] = (),
                 accept_new: bool = False, work: str = "the node", name: str = "sparkorca-hub"):
        self.secret = secret
        self.accept_new = accept_new
        self.work = work
        self.nodes: Dict[str, NodeLink] = {k: NodeLink(k, label) for k, label in expected}
        self.cond = threading.Condition()
        self.refused = 0
        self.closing = False
        self.on_register: Callable[[NodeLink], None] = lambda link: None
        self.on_message: Callable[[NodeLink, dict], None] = lambda link, msg: None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self.address = (host, self._sock.getsockname()[1])
        self._accepting = threading.Thread(target=self._accept_loop, name=name, daemon=True)
        self._accepting.start()

    # -- serving ------------------------------------------------------------
    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return  # close() shut the socket down
            threading.Thread(target=self._serve, args=(sock,), daemon=True,
                             name=f"{self._accepting.name}-conn").start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            channel = Channel.accept(sock, self.secret)
            msg = channel.recv()
        except (OSError, ConnectionError, ValueError) as e:
            with self.cond:
                self.refused += 1
            log.warning("%s refused a connection: %s", self._accepting.name, e)
            sock.close()
            return
        key = str(msg.get("node")) if msg.get("type") == "register" else None
        with self.cond:
            link = self.nodes.get(key) if key is not None else None
            if link is None and key is not None and self.accept_new and not self.closing:
                link = self.nodes[key] = NodeLink(key)
            if link is not None and link.info is None and not self.closing:
                # acknowledged before other threads can see the link and message it
                self.send_to_channel(channel, {"type": "registered"})
                link.info = {k: v for k, v in msg.items() if k not in ("type", "node")}
                link.channel = channel
                link.connected = True
                link.state = NodeState.RUNNING
                self.cond.notify_all()
            else:
                link = None
        if link is None:
            channel.send({"type": "abort", "why": f"the driver expects no node {key!r}"})
            channel.close()
            return
        self.on_register(link)
        self._read_loop(link, channel)

    def _read_loop(self, link: NodeLink, channel: Channel) -> None:
        while True:
            try:
                msg = channel.recv()
            except (OSError, ConnectionError, ValueError):
                with self.cond:
                    link.connected = False
                    if link.state == NodeState.RUNNING:
                        link.state = (NodeState.STOPPED if self.closing or link.stopping
                                      else NodeState.LOST)
                    self.cond.notify_all()
                return
            with self.cond:
                kind = msg.get("type")
                if kind == "done":
                    link.state = NodeState.DONE
                    link.result = msg.get("result")
                elif kind == "error":
                    link.state = NodeState.ERROR
                    link.report = str(msg.get("traceback"))
                elif kind == "exited":
                    link.state = NodeState.EXITED
                    link.report = f"{msg.get('why')}\n--- last output ---\n{msg.get('tail')}"
                else:
                    self.on_message(link, msg)
                self.cond.notify_all()

    # -- what the driver asks ------------------------------------------------
    def node(self, key) -> NodeLink:
        return self.nodes[str(key)]

    def send_to(self, link: NodeLink, msg: dict) -> None:
        self.send_to_channel(link.channel, msg)

    @staticmethod
    def send_to_channel(channel: Optional[Channel], msg: dict) -> None:
        if channel is None:
            return  # not registered
        try:
            channel.send(msg)
        except (OSError, ConnectionError):
            pass  # the read loop reports the node as lost

    def send(self, keys: Iterable, msg: dict) -> None:
        for k in keys:
            self.send_to(self.node(k), msg)

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
                # woken by every node event; the timeout only re-checks ``failed``
                self.cond.wait(0.5 if left is None else min(0.5, left))

    def failures(self) -> List[str]:
        """Every node's error, unexpected exit or loss, for the driver's exceptions."""
        out = []
        with self.cond:
            for link in self.nodes.values():
                if link.state == NodeState.ERROR:
                    out.append(f"{self.work} failed on {link.describe()}:\n{link.report}")
                elif link.state == NodeState.EXITED:
                    out.append(f"{link.describe()} exited: {link.report}")
                elif link.state == NodeState.LOST:
                    out.append(f"{link.describe()} was lost: its connection to the driver "
                               "closed without a result (its executor or process died)")
        return out

    def stop_nodes(self, keys: Iterable, timeout: float) -> List[NodeLink]:
        """Tell nodes to stop and wait until their connections close (a node closes
        it when its process exits, after its children); the ones still connected."""
        return self.wait_stopped(self.tell_to_stop(keys), timeout)

    def tell_to_stop(self, keys: Iterable) -> List[NodeLink]:
        """Tell nodes to stop; returns at once with their links (see wait_stopped)."""
        links = [self.node(k) for k in keys]
        with self.cond:
            for link in links:
                link.stopping = True
        for link in links:
            self.send_to(link, {"type": "stop"})
        return links

    def wait_stopped(self, links: List[NodeLink], timeout: float) -> List[NodeLink]:
        """Wait until ``links``' connections close; the ones still connected."""
        self.wait(lambda: not any(link.connected for link in links), timeout)
        return [link for link in links if link.connected]

    def close(self) -> None:
        """Stop accepting and drop every connection; the hub's threads end."""
        with self.cond:
            self.closing = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        self._sock.close()
        self._accepting.join(10)
        for link in list(self.nodes.values()):
            if link.channel is not None:
                link.channel.close()

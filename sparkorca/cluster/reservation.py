"""The rendezvous of a TFCluster: the node hub, plus what TensorFlowOnSpark's
reservation did. Nodes register their host, port and feed socket; once every
expected node has, each gets the whole cluster. The connections then stay open:
the driver sends flush / replay / end / stop, nodes report done / error /
replayed (see ``sparkorca.node.hub``).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

from ..errors import OrcaRuntimeError, StartupTimeoutError
from ..node.hub import NodeHub, NodeLink
from .roles import NodeRole


class ReservationServer(NodeHub):
    def __init__(self, host: str, secret: bytes, roles: Sequence[NodeRole]):
        super().__init__(host, secret, work="map_fun", name="sparkorca-reservation",
                         expected=[(str(r.worker_num),
                                    f"node {r.worker_num} ({r.job_name}:{r.task_index})")
                                   for r in roles])
        self._cluster_sent = False
        self.on_register = self._send_cluster_when_complete
        self.on_message = self._on_message
        # the map_funs' ctx.report(...) messages, in the hub's reading thread
        self.on_progress: Callable[[NodeLink, dict], None] = lambda link, body: None

    def _send_cluster_when_complete(self, _link: NodeLink) -> None:
        with self.cond:
            if self._cluster_sent or not self.complete():
                return
            self._cluster_sent = True
            info = self.cluster_info()
        for link in self.nodes.values():
            self.send_to(link, {"type": "cluster", "cluster_info": info})

    def _on_message(self, link: NodeLink, msg: dict) -> None:
        if msg.get("type") == "replayed":
            link.replies[msg["feed_id"]] = msg
        elif msg.get("type") == "progress":
            self.on_progress(link, msg.get("body") or {})

    def complete(self) -> bool:
        return all(link.info is not None for link in self.nodes.values())

    def cluster_info(self) -> List[dict]:
        """Every node's registration, by worker_num; only once ``complete()``."""
        out = []
        for k in sorted(self.nodes, key=int):
            info = self.nodes[k].info
            assert info is not None
            out.append(info)
        return out

    def wait_registered(self, timeout: float, failed: Callable[[], Optional[str]],
                        progress: Callable[[], str]) -> List[dict]:
        why = self.wait(self.complete, timeout, failed)
        if why is None:
            return self.cluster_info()
        missing = [link.describe() for link in self.nodes.values() if link.info is None]
        text = (f"TFCluster reservation: {len(missing)} of {len(self.nodes)} node(s) never "
                f"registered: {', '.join(missing)}. {progress()}")
        if why == "timeout":
            raise StartupTimeoutError(f"timed out after reservation_timeout={timeout:g}s. {text}")
        raise OrcaRuntimeError(f"{text}\n{why}")

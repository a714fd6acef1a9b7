"""Between an Estimator's workers: their torch.distributed process group (gloo),
and JSON-able values exchanged over it, never pickle."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from typing import Iterator

GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def _interface_of(ip: str):
    import psutil
    return next((name for name, addrs in psutil.net_if_addrs().items()
                 if any(a.address == ip for a in addrs)), None)


def init_process_group(secret: bytes):
    """The workers' gloo group, from MASTER_ADDR/MASTER_PORT, RANK and WORLD_SIZE
    (set by the node layer or the Ray backend); returns its rendezvous store, to
    ``close()`` after the group is destroyed. The store is rank 0's, on MASTER_ADDR,
    behind the fit's ``secret`` (learn.rendezvous; torch's TCPStore answers anyone,
    on every interface); gloo's pairs bind the interface of this node's address
    (gloo's own pick is the host name's address) unless GLOO_SOCKET_IFNAME says."""
    import torch.distributed as dist

    from ..node.host import node_ip
    from .rendezvous import store
    interface = _interface_of(node_ip())
    if interface and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    rendezvous = store(addr, port, rank, secret, GROUP_TIMEOUT)
    try:
        dist.init_process_group("gloo", store=rendezvous, rank=rank, world_size=world,
                                timeout=GROUP_TIMEOUT)
    except BaseException:
        rendezvous.close()
        raise
    return rendezvous


@contextlib.contextmanager
def worker_group(secret: bytes) -> Iterator:
    """A training worker's group (``init_process_group``) and its gradient exchange
    (learn.allreduce ``PeerSum``, yielded); all undone after."""
    import torch.distributed as dist

    from .allreduce import PeerSum
    rendezvous = init_process_group(secret)
    summer = None
    try:
        summer = PeerSum.connect(secret)
        yield summer
    finally:
        if summer is not None:
            summer.close()
        dist.destroy_process_group()
        rendezvous.close()


def gather_json(obj) -> list:
    """Every worker's JSON-able ``obj``, in rank order."""
    import torch
    import torch.distributed as dist
    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[:len(data)] = data
    parts = [torch.zeros(longest, dtype=torch.uint8) for _ in sizes]
    dist.all_gather(parts, padded)
    return [json.loads(bytes(p[:int(s.item())].numpy()).decode()) for p, s in zip(parts, sizes)]

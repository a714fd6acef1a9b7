"""Between an Estimator's workers: their torch.distributed process group (gloo),
and JSON-able values exchanged over it, never pickle."""

from __future__ import annotations

import datetime
import json
import os
import socket

GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def _interface_of(ip: str):
    import psutil
    return next((name for name, addrs in psutil.net_if_addrs().items()
                 if any(a.address == ip for a in addrs)), None)


def init_process_group() -> None:
    """The workers' gloo group, from MASTER_ADDR/MASTER_PORT, RANK and WORLD_SIZE
    (set by the node layer or the Ray backend), bound to the node's address: the
    rendezvous store on rank 0 listens on MASTER_ADDR (torch's own would listen on
    every interface), and gloo's pairs on the interface of this node's address
    (gloo's own pick is the host name's address) unless GLOO_SOCKET_IFNAME says."""
    import torch.distributed as dist

    from ..node.host import node_ip
    interface = _interface_of(node_ip())
    if interface and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    listen_fd = None
    if rank == 0:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(max(16, world))
        listen_fd = sock.detach()  # the store's from now on
    store = dist.TCPStore(addr, port, world, rank == 0, GROUP_TIMEOUT,
                          master_listen_fd=listen_fd, use_libuv=True)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                            timeout=GROUP_TIMEOUT)


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

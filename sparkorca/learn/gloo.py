"""Between an Estimator's workers: JSON-able values exchanged over
torch.distributed (gloo), never pickle."""

from __future__ import annotations

import json


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

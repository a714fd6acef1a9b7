"""How the Estimators' workers reduce a tensor together over their mesh
(learn.mesh: authenticated connections, raw bytes): recursive doubling on
powers of two (log2(N) swaps with one partner each), a ring (reduce-scatter,
then all-gather: each worker sends about 2x the buffer) for other worker counts
and for large buffers among more than two workers.

Why not gloo's all-reduce: on two 1-CPU workers (bench/estimator.py's MLP, 77k
floats) it took 1.4-1.9 ms against a 1.5 ms step of compute, while one swap of
the same floats over a socket takes 0.15 ms; gloo cuts a buffer into segments
and passes each through its worker and device threads, a swap is one send and
one receive. And gloo's connections answer anyone.

Every worker ends with bitwise the same result (the Estimators compare the
workers' weights after fit): a swap combines ``a + b`` on one side and ``b + a``
on the other, equal in floating point; in a ring each chunk is reduced by one
worker and copied to the others.
"""

from __future__ import annotations

from typing import Callable

from .mesh import PEER_GONE

# what a worker raises when another worker's failure ended its collective: a
# consequence, so the driver waits a moment for that worker's own error (the cause)
CONSEQUENCES = (PEER_GONE, "Connection closed by peer", "connection reset by peer")
LARGE = 4 << 20  # bytes above which more than two workers use the ring

Combine = Callable  # (mine, theirs) -> None: mine combined with theirs, in place
Scratch = Callable  # (numel, dtype) -> a tensor to receive into


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def all_reduce_(mesh, tensor, combine: Combine, scratch: Scratch,
                symmetric: bool = True) -> None:
    """``tensor`` (contiguous, on the CPU) reduced in place over every worker of
    ``mesh`` by ``combine``; every worker calls it with a tensor of the same size.
    ``symmetric``: ``combine(a, b)`` gives the bits of ``combine(b, a)`` (sums and
    products do; min and max of +0.0 and -0.0 keep one operand: there the lower
    rank's goes first on both sides of a swap)."""
    world = mesh.world
    if world == 1 or tensor.numel() == 0:
        return
    flat = tensor.view(-1)
    if _is_power_of_two(world) and (world == 2 or tensor.nbytes <= LARGE):
        theirs = scratch(flat.numel(), flat.dtype)
        mine_bytes, theirs_bytes = bytes_of(flat), bytes_of(theirs)
        for k in range(world.bit_length() - 1):
            peer = mesh.rank ^ (1 << k)
            mesh.exchange(peer, mine_bytes, peer, theirs_bytes)
            if symmetric or mesh.rank < peer:
                combine(flat, theirs)
            else:
                combine(theirs, flat)
                flat.copy_(theirs)
        return
    _ring(mesh, flat, combine, scratch)


def _ring(mesh, flat, combine: Combine, scratch: Scratch) -> None:
    world, rank = mesh.world, mesh.rank
    chunks = list(flat.tensor_split(world))
    after, before = (rank + 1) % world, (rank - 1) % world
    received = scratch(max(c.numel() for c in chunks), flat.dtype)
    for step in range(world - 1):  # reduce-scatter: chunk rank+1 ends complete here
        out, into = chunks[(rank - step) % world], chunks[(rank - step - 1) % world]
        part = received[:into.numel()]
        mesh.exchange(after, bytes_of(out), before, bytes_of(part))
        combine(into, part)
    for step in range(world - 1):  # all-gather: the complete chunks go round
        out, into = chunks[(rank + 1 - step) % world], chunks[(rank - step) % world]
        mesh.exchange(after, bytes_of(out), before, bytes_of(into))


def bytes_of(tensor) -> memoryview:
    """A contiguous tensor's memory as bytes (any dtype, bfloat16 too)."""
    import torch
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def ddp_hook(state, bucket):
    """A DistributedDataParallel communication hook: the bucket's gradients
    averaged over the workers through ``state`` (learn.process_group's
    ``PeerGroup``: one call, no Work or future of torch's in between)."""
    import torch
    buf = bucket.buffer()
    state.sum_(buf).div_(state.world)
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(buf)
    return fut

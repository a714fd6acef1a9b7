"""Between an Estimator's workers: their torch.distributed process group, and
JSON-able values exchanged over it, never pickle.

The group is sparkorca's own backend ("sparkorca"), not gloo: gloo's pair
connections accept anyone who reaches them and carry what a peer sends into a
fit's weights. Ours runs every collective over the workers' mesh (learn.mesh:
one connection per pair, each opened with the mutual HMAC challenge on the
fit's secret) as raw bytes: all_reduce (learn.allreduce), broadcast, all_gather
and barrier, which is what DDP, the Estimators and their users' callbacks call.
The collectives run when called (their Work is already complete), on the CPU.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
from typing import Iterator

from ..errors import OrcaRuntimeError

BACKEND = "sparkorca"
GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def _combiner(op):
    """In-place ``(mine, theirs)`` for a torch.distributed ReduceOp."""
    import torch
    import torch.distributed as dist
    R = dist.ReduceOp
    ops = {R.SUM: torch.Tensor.add_, R.AVG: torch.Tensor.add_, R.PRODUCT: torch.Tensor.mul_,
           R.MIN: lambda a, b: torch.minimum(a, b, out=a),
           R.MAX: lambda a, b: torch.maximum(a, b, out=a)}
    for known, combine in ops.items():
        if op == known:
            return combine
    raise OrcaRuntimeError(f"all_reduce: the reduce op {getattr(op, 'op', op)} is not supported "
                           "by the Estimators' process group; use SUM, AVG, PRODUCT, MIN or MAX")


@functools.lru_cache(maxsize=None)
def _group_class():
    import torch
    import torch.distributed as dist

    from .allreduce import all_reduce_, bytes_of

    class Done(dist._Work):
        """A collective that ran when it was called."""

        def __init__(self, result=None) -> None:
            super().__init__()
            self._future: torch.futures.Future = torch.futures.Future()
            self._future.set_result(result)

        def wait(self, timeout=None) -> bool:
            return True

        def is_completed(self) -> bool:
            return True

        def is_success(self) -> bool:
            return True

        def get_future(self):
            return self._future

    @contextlib.contextmanager
    def contiguous(tensor) -> Iterator:
        """``tensor``'s data (detached: a parameter is written in place, as gloo
        does), or a contiguous copy of it that is written back after."""
        data = tensor.detach()
        if data.is_contiguous():
            yield data
            return
        work = data.contiguous()
        yield work
        data.copy_(work)

    class PeerGroup(dist.ProcessGroup):
        """A torch.distributed process group over ``mesh`` (learn.mesh)."""

        def __init__(self, mesh) -> None:
            super().__init__(mesh.rank, mesh.world)  # type: ignore[call-arg]
            self.mesh = mesh
            self.world = mesh.world
            self._scratch: dict = {}

        def getBackendName(self) -> str:
            return BACKEND

        def _receive_buffer(self, numel: int, dtype):
            # one per size and type: DDP's buckets come back every step
            key = (numel, dtype)
            if key not in self._scratch:
                self._scratch[key] = torch.empty(numel, dtype=dtype)
            return self._scratch[key]

        def sum_(self, tensor):
            """``tensor`` (contiguous, on the CPU) replaced by its sum over the workers."""
            all_reduce_(self.mesh, tensor.detach(), torch.Tensor.add_, self._receive_buffer)
            return tensor

        def allreduce(self, tensors, opts):
            combine = _combiner(opts.reduceOp)
            average = opts.reduceOp == dist.ReduceOp.AVG
            if average and not all(t.is_floating_point() for t in tensors):
                raise OrcaRuntimeError("all_reduce: AVG needs floating point tensors, got "
                                       f"{sorted({str(t.dtype) for t in tensors})}")
            symmetric = not any(opts.reduceOp == op for op in (dist.ReduceOp.MIN,
                                                               dist.ReduceOp.MAX))
            for tensor in tensors:
                with contiguous(tensor) as work:
                    all_reduce_(self.mesh, work, combine, self._receive_buffer, symmetric)
                    if average:
                        work.div_(self.world)
            return Done(tensors)

        def broadcast(self, tensors, opts):
            root = opts.rootRank
            for tensor in tensors:
                with contiguous(tensor) as work:
                    data = bytes_of(work)
                    if self.mesh.rank == root:
                        for peer in range(self.world):
                            if peer != root:
                                self.mesh.send(peer, data)
                    else:
                        self.mesh.recv(root, data)
            return Done(tensors)

        def _gather_into(self, parts, tensor) -> None:
            """Every worker's ``tensor`` into ``parts`` (rank order)."""
            rank, world = self.mesh.rank, self.world
            if len(parts) != world or any(p.numel() != tensor.numel() or p.dtype != tensor.dtype
                                          for p in parts):
                raise OrcaRuntimeError(
                    f"all_gather: needs {world} outputs of {tensor.numel()} {tensor.dtype}, "
                    f"got {[(p.numel(), p.dtype) for p in parts]}")
            with contiguous(tensor) as mine:
                parts[rank].detach().copy_(mine.view(parts[rank].shape))
                out = bytes_of(mine)
                for step in range(1, world):  # one peer out, another in, per step
                    to, frm = (rank + step) % world, (rank - step) % world
                    with contiguous(parts[frm]) as into:
                        self.mesh.exchange(to, out, frm, bytes_of(into))

        def allgather(self, output_tensors, input_tensors, opts):
            for parts, tensor in zip(output_tensors, input_tensors):
                self._gather_into(parts, tensor)
            return Done(output_tensors)

        def _allgather_base(self, output, input, opts):
            if output.numel() != self.world * input.numel():
                raise OrcaRuntimeError(
                    f"all_gather_into_tensor: the output needs {self.world} x "
                    f"{input.numel()} elements, it has {output.numel()}")
            with contiguous(output) as out:
                self._gather_into(list(out.view(self.world, -1)), input.reshape(-1))
            return Done(output)

        all_gather_single = _allgather_base  # all_gather_into_tensor, torch >= 2.12

        def barrier(self, opts=None):
            self.sum_(torch.zeros(1))
            return Done()

        def reduce(self, tensors, opts):  # every worker gets it; the root is one of them
            all_reduce_opts = dist.AllreduceOptions()
            all_reduce_opts.reduceOp = opts.reduceOp
            return self.allreduce(tensors, all_reduce_opts)

        def close(self) -> None:
            self.mesh.close()

    def unsupported(name: str):
        def call(self, *args, **kwargs):
            raise OrcaRuntimeError(
                f"torch.distributed: {name} is not supported by the Estimators' process group "
                "(sparkorca); it runs all_reduce, broadcast, all_gather, reduce and barrier")
        return call
    # else torch answers "No backend type associated with device type cpu"
    for name in ("reduce_scatter", "_reduce_scatter_base", "reduce_scatter_single", "gather",
                 "scatter", "alltoall", "alltoall_base", "send", "recv", "recv_anysource",
                 "allreduce_coalesced", "allgather_coalesced",
                 "allgather_into_tensor_coalesced", "reduce_scatter_tensor_coalesced"):
        setattr(PeerGroup, name, unsupported(name))
    return PeerGroup


# the fit's secret and mesh of the group being made (one group at a time per
# process: a worker's), for the backend's creator, which torch calls with the store
_making: dict = {}


def _create(prefix_store, rank: int, world: int, timeout: datetime.timedelta):
    from .mesh import Mesh
    mesh = _making["mesh"] = Mesh.connect(prefix_store, rank, world, _making["secret"],
                                          timeout.total_seconds(), timeout.total_seconds())
    return _group_class()(mesh)


@functools.lru_cache(maxsize=None)
def _register() -> None:
    import torch.distributed as dist
    try:
        dist.Backend.register_backend(BACKEND, _create, devices=["cpu"])
    except TypeError:  # torch < 2.3 has no devices argument
        dist.Backend.register_backend(BACKEND, _create)


def init_process_group(secret: bytes):
    """The workers' group, from MASTER_ADDR/MASTER_PORT, RANK and WORLD_SIZE (set by
    the node layer or the Ray backend); returns its rendezvous store, to ``close()``
    after the group is destroyed. The store is rank 0's, on MASTER_ADDR, behind the
    fit's ``secret`` (learn.rendezvous; torch's TCPStore answers anyone, on every
    interface); the mesh's listeners bind this node's address. The workers wait
    for each other up to GROUP_TIMEOUT, as gloo's did."""
    import torch.distributed as dist

    from .rendezvous import store
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    rendezvous = store(addr, port, rank, secret, GROUP_TIMEOUT)
    _register()
    _making.update(secret=secret, mesh=None)
    try:
        dist.init_process_group(BACKEND, store=rendezvous, rank=rank, world_size=world,
                                timeout=GROUP_TIMEOUT)
    except BaseException:
        if _making["mesh"] is not None:  # made, then torch failed: its sockets go
            _making["mesh"].close()
        rendezvous.close()
        raise
    finally:
        _making.clear()
    return rendezvous


@contextlib.contextmanager
def worker_group(secret: bytes) -> Iterator:
    """A training worker's group (``init_process_group``), yielded (its ``sum_`` is
    the gradient exchange); undone after."""
    import torch.distributed as dist
    rendezvous = init_process_group(secret)
    group = dist.group.WORLD
    try:
        yield group
    finally:
        try:
            group.close()  # type: ignore[union-attr]
            dist.destroy_process_group()
        finally:
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

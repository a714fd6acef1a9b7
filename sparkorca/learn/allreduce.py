"""The workers' gradient sum of every training step: each worker swaps its
partial sum with one partner per round over a direct, authenticated TCP
connection (recursive doubling: log2(N) rounds), instead of gloo's all-reduce.

Why not gloo's: on two 1-CPU workers (bench/estimator.py's MLP, 77k floats) its
all_reduce took 1.4-1.9 ms against a 1.5 ms step of compute, while one swap of
the same floats over a socket takes 0.15 ms; gloo cuts a buffer into segments
and passes each through its worker and device threads, an exchange is one send
and one receive. Each round adds two partial sums and ``a + b == b + a``
in floating point, so every worker ends with bitwise the same sum (the
Estimators compare the workers' weights after fit). World sizes that are not a
power of two, and large buffers among more than two workers (where recursive
doubling sends more bytes than gloo's ring), go through gloo's all_reduce.

The connections are the node layer's channels: both ends prove they hold the
fit's secret before a byte of data is read; the data are the tensors' raw bytes,
never unpickled.
"""

from __future__ import annotations

import selectors
import socket
import struct
import time
from typing import Dict

from ..errors import OrcaRuntimeError

PEER_GONE = "closed the gradient exchange"
# what a worker raises when another worker's failure ended its collective: a
# consequence, so the driver waits a moment for that worker's own error (the cause)
CONSEQUENCES = (PEER_GONE, "Connection closed by peer", "connection reset by peer")
LARGE = 4 << 20  # bytes above which more than two workers use gloo's ring
CONNECT_TIMEOUT = 120.0


_RANK = struct.Struct("!I")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _raw(channel) -> socket.socket:
    """An authenticated channel's socket, for raw buffers from now on (its buffered
    reader has read nothing: the handshake reads the socket itself)."""
    channel.rfile.close()
    channel.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return channel.sock


def _accepted(listener: socket.socket, secret: bytes, deadline: float):
    """(rank, socket) of the next partner to connect; (None, None) for a peer that
    does not hold the fit's secret or says no rank in time (it is dropped)."""
    from ..node.channel import AuthenticationError, Channel, recv_exact
    listener.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        sock, _ = listener.accept()
    except socket.timeout:
        return None, None
    try:
        sock = _raw(Channel.accept(sock, secret))
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        (rank,) = _RANK.unpack(recv_exact(sock, _RANK.size))
        sock.settimeout(None)
        return rank, sock
    except (AuthenticationError, OSError, ConnectionError):
        sock.close()
        return None, None


class PeerSum:
    """In-place sums of float tensors over every worker of a torch.distributed
    group; built collectively by every worker (``PeerSum.connect``)."""

    def __init__(self, rank: int, world: int, partners: Dict[int, socket.socket],
                 timeout: float) -> None:
        self.rank, self.world = rank, world
        self.partners = partners  # per round, in round order: partner rank -> socket
        self.timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._into: Dict[tuple, object] = {}

    @classmethod
    def connect(cls, secret: bytes, timeout: float = 1800.0,
                connect_timeout: float = CONNECT_TIMEOUT) -> "PeerSum":
        """Connect this worker to its partners (the lower rank of a pair listens,
        the higher connects); every worker of the default group calls it. A peer
        without the fit's secret is dropped; ``timeout``: of an exchange."""
        import torch.distributed as dist

        from ..node.channel import connect_tcp
        from ..node.host import node_ip
        from .gloo import gather_json
        rank, world = dist.get_rank(), dist.get_world_size()
        if world == 1 or not _is_power_of_two(world):
            gather_json(None)  # every worker takes part in the same collectives
            return cls(rank, world, {}, timeout)
        listener = socket.socket()
        partners: Dict[int, socket.socket] = {}
        try:
            listener.bind((node_ip(), 0))
            listener.listen(world)
            addresses = gather_json(list(listener.getsockname()[:2]))
            rounds = [rank ^ (1 << k) for k in range(world.bit_length() - 1)]
            for peer in (p for p in rounds if p < rank):  # lower ranks listen
                host, port = addresses[peer]
                sock = _raw(connect_tcp(host, port, secret, connect_timeout))
                partners[peer] = sock
                sock.sendall(_RANK.pack(rank))
            expected = {p for p in rounds if p > rank}
            deadline = time.monotonic() + connect_timeout
            while expected - set(partners) and time.monotonic() < deadline:
                peer, sock = _accepted(listener, secret, deadline)
                if sock is None:
                    continue  # not a worker of this fit: refused, the others still come
                if peer not in expected or peer in partners:
                    sock.close()
                    raise OrcaRuntimeError(f"worker {rank}: unexpected gradient exchange "
                                           f"partner {peer!r}")
                partners[peer] = sock
            if expected - set(partners):
                raise OrcaRuntimeError(
                    f"worker {rank} timed out after {connect_timeout:g}s waiting for workers "
                    f"{sorted(expected - set(partners))} to connect for the gradient exchange")
        except BaseException:
            for sock in partners.values():
                sock.close()
            raise
        finally:
            listener.close()
        for sock in partners.values():
            sock.setblocking(False)
        return cls(rank, world, {p: partners[p] for p in rounds}, timeout)

    def sum_(self, tensor):
        """``tensor`` (contiguous, on the CPU) replaced by its sum over the workers."""
        if self.world == 1:
            return tensor
        if not self.partners or (self.world > 2 and tensor.nbytes > LARGE) or \
                not tensor.is_contiguous():
            import torch.distributed as dist
            dist.all_reduce(tensor)
            return tensor
        import torch
        key = (tensor.numel(), tensor.dtype)
        other = self._into.get(key)
        if other is None:  # one receive buffer per size: DDP's buckets come back each step
            other = self._into[key] = torch.empty_like(tensor)
        mine = _bytes_of(tensor.detach())
        theirs = _bytes_of(other)
        for peer, sock in self.partners.items():
            self._swap(peer, sock, mine, theirs)
            tensor.add_(other)
        return tensor

    def _swap(self, peer: int, sock: socket.socket, out: memoryview, into: memoryview) -> None:
        """Send ``out`` to ``peer`` while reading its buffer into ``into`` (both
        directions at once: two blocking sends of large buffers would deadlock)."""
        sent = got = 0
        deadline = time.monotonic() + self.timeout
        while sent < len(out) or got < len(into):
            try:
                if sent < len(out):
                    try:
                        sent += sock.send(out[sent:])
                    except BlockingIOError:
                        pass
                n = -1
                if got < len(into):
                    try:
                        n = sock.recv_into(into[got:])
                    except BlockingIOError:
                        pass
            except OSError as err:  # reset, broken pipe: the partner's process let go
                raise OrcaRuntimeError(f"worker {self.rank}: worker {peer} {PEER_GONE} "
                                       f"(it failed or ended: {err})") from None
            if n == 0:
                raise OrcaRuntimeError(f"worker {self.rank}: worker {peer} {PEER_GONE} "
                                       "(it failed or ended)")
            got += max(n, 0)
            if sent < len(out) or got < len(into):
                events = (selectors.EVENT_READ if got < len(into) else 0) | \
                    (selectors.EVENT_WRITE if sent < len(out) else 0)
                self._selector.register(sock, events)
                try:
                    ready = self._selector.select(max(0.0, deadline - time.monotonic()))
                finally:
                    self._selector.unregister(sock)
                if not ready and time.monotonic() >= deadline:
                    raise OrcaRuntimeError(
                        f"worker {self.rank} timed out after {self.timeout:g}s exchanging "
                        f"gradients with worker {peer} ({got} of {len(into)} bytes in)")

    def close(self) -> None:
        for sock in self.partners.values():
            sock.close()
        self.partners = {}
        self._into = {}
        self._selector.close()


def _bytes_of(tensor) -> memoryview:
    """A contiguous tensor's memory as bytes (any dtype, bfloat16 too)."""
    import torch
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def ddp_hook(state: PeerSum, bucket):
    """A DistributedDataParallel communication hook: the bucket's gradients
    averaged over the workers through ``state``."""
    import torch
    buf = bucket.buffer()
    state.sum_(buf).div_(state.world)
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(buf)
    return fut

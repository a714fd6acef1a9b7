"""The connections between an Estimator's workers: one direct TCP connection per
pair of workers, each opened with the node layer's mutual HMAC challenge on the
fit's secret, bound to the node's address. Everything the workers exchange goes
over them as raw bytes, never unpickled (learn.process_group builds the
collectives on them).

The lower rank of a pair listens, the higher connects; the listeners' addresses
go through the fit's rendezvous store (learn.rendezvous: authenticated too).
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import time
from typing import Dict, Optional

from ..errors import OrcaRuntimeError

PEER_GONE = "closed the gradient exchange"

_RANK = struct.Struct("!I")
_NOTHING = memoryview(b"")


def _raw(channel) -> socket.socket:
    """An authenticated channel's socket, for raw buffers from now on (its buffered
    reader has read nothing: the handshake reads the socket itself)."""
    channel.rfile.close()
    channel.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return channel.sock


def _accepted(listener: socket.socket, secret: bytes, deadline: float):
    """(rank, socket) of the next worker to connect; (None, None) for a peer that
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


class Mesh:
    """This worker's connections to every other worker of the fit."""

    def __init__(self, rank: int, world: int, peers: Dict[int, socket.socket],
                 timeout: float) -> None:
        self.rank, self.world = rank, world
        self.peers = peers  # rank -> socket (non-blocking)
        self.timeout = timeout  # of one exchange
        self._selector = selectors.DefaultSelector()

    @classmethod
    def connect(cls, store, rank: int, world: int, secret: bytes, timeout: float,
                connect_timeout: float) -> "Mesh":
        """Every worker calls it: listen, publish the address in ``store``, connect
        to the lower ranks and take the higher ones' connections, within
        ``connect_timeout``; ``timeout``: of one exchange. A peer without
        the fit's secret is dropped and the workers still wait for theirs."""
        from ..node.channel import AuthenticationError, connect_tcp
        from ..node.host import node_ip
        peers: Dict[int, socket.socket] = {}
        listener = socket.socket()
        try:
            listener.bind((node_ip(), 0))
            listener.listen(max(1, world))
            store.set(f"sparkorca-mesh/{rank}", json.dumps(listener.getsockname()[:2]))
            for peer in range(rank):  # lower ranks listen
                host, port = json.loads(store.get(f"sparkorca-mesh/{peer}"))
                try:
                    sock = _raw(connect_tcp(host, port, secret, connect_timeout))
                except AuthenticationError:
                    raise
                except OSError as err:  # it published its address, then went
                    raise OrcaRuntimeError(f"worker {rank}: worker {peer} {PEER_GONE} "
                                           f"(unreachable at {host}:{port}: {err})") from None
                peers[peer] = sock
                sock.sendall(_RANK.pack(rank))
            expected = set(range(rank + 1, world))
            deadline = time.monotonic() + connect_timeout
            while expected - set(peers) and time.monotonic() < deadline:
                peer, sock = _accepted(listener, secret, deadline)
                if sock is None:
                    continue  # not a worker of this fit: refused, the others still come
                if peer not in expected or peer in peers:
                    sock.close()
                    raise OrcaRuntimeError(f"worker {rank}: unexpected connection from "
                                           f"worker {peer!r}")
                peers[peer] = sock
            if expected - set(peers):
                raise OrcaRuntimeError(
                    f"worker {rank} timed out after {connect_timeout:g}s waiting for workers "
                    f"{sorted(expected - set(peers))} to connect to it")
        except BaseException:
            for sock in peers.values():
                sock.close()
            raise
        finally:
            listener.close()
        for sock in peers.values():
            sock.setblocking(False)
        return cls(rank, world, peers, timeout)

    def exchange(self, to: Optional[int], out: memoryview, frm: Optional[int],
                 into: memoryview) -> None:
        """Send ``out`` to worker ``to`` while reading worker ``frm``'s bytes into
        ``into`` (both at once: two workers' blocking sends of large buffers to each
        other would deadlock). Either may be None (with an empty buffer)."""
        if to is None:
            to, out = -1, _NOTHING
        if frm is None:
            frm, into = -1, _NOTHING
        sent = got = 0
        deadline = time.monotonic() + self.timeout
        while True:
            if sent < len(out):
                sent += self._send(to, out[sent:])
            if got < len(into):
                got += self._recv(frm, into[got:])
            if sent == len(out) and got == len(into):
                return
            events: Dict[socket.socket, int] = {}
            if sent < len(out):
                events[self.peers[to]] = selectors.EVENT_WRITE
            if got < len(into):
                sock = self.peers[frm]
                events[sock] = events.get(sock, 0) | selectors.EVENT_READ
            for sock, mask in events.items():
                self._selector.register(sock, mask)
            try:
                ready = self._selector.select(max(0.0, deadline - time.monotonic()))
            finally:
                for sock in events:
                    self._selector.unregister(sock)
            if not ready and time.monotonic() >= deadline:
                raise OrcaRuntimeError(
                    f"worker {self.rank} timed out after {self.timeout:g}s exchanging with "
                    f"worker {frm if got < len(into) else to} ({sent} of {len(out)} bytes "
                    f"out, {got} of {len(into)} in)")

    def send(self, to: int, out: memoryview) -> None:
        self.exchange(to, out, None, _NOTHING)

    def recv(self, frm: int, into: memoryview) -> None:
        self.exchange(None, _NOTHING, frm, into)

    def _send(self, peer: int, data: memoryview) -> int:
        try:
            return self.peers[peer].send(data)
        except BlockingIOError:
            return 0
        except OSError as err:  # reset, broken pipe: the peer's process let go
            raise self._gone(peer, f"it failed or ended: {err}") from None

    def _recv(self, peer: int, into: memoryview) -> int:
        try:
            n = self.peers[peer].recv_into(into)
        except BlockingIOError:
            return 0
        except OSError as err:
            raise self._gone(peer, f"it failed or ended: {err}") from None
        if n == 0:
            raise self._gone(peer, "it failed or ended")
        return n

    def _gone(self, peer: int, why: str) -> OrcaRuntimeError:
        return OrcaRuntimeError(f"worker {self.rank}: worker {peer} {PEER_GONE} ({why})")

    def close(self) -> None:
        for sock in self.peers.values():
            try:  # the peers see the end now, even where a forked child holds a copy
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.peers = {}
        self._selector.close()

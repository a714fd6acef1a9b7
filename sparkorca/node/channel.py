"""The authenticated message channel of the node layer: driver <-> nodes (Ray
node runners, TFCluster nodes), and feeders <-> TFCluster nodes.

Both ends prove they hold the cluster's secret before anything else is read
(mutual HMAC-SHA256 challenge-response over fresh nonces), and then exchange
length-prefixed JSON messages. Nothing read from a peer is ever unpickled before
that peer has authenticated; the driver never unpickles anything at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import struct
import threading
import time
from typing import Callable, Iterator, Optional

from ..errors import OrcaRuntimeError

log = logging.getLogger(__name__)

_NONCE = 32
_LEN = struct.Struct("!I")
MAX_MESSAGE = 64 << 20  # an unauthenticated peer must not make us allocate more


class AuthenticationError(OrcaRuntimeError, ConnectionError):
    """The peer did not prove it holds the cluster secret."""


def _mac(secret: bytes, label: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, label + b"".join(parts), hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed by the peer ({len(buf)} of {n} bytes read)")
        buf += chunk
    return bytes(buf)


class Channel:
    """One authenticated connection; ``send``/``recv`` carry JSON-able objects."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        # Reads go through one buffered reader, so messages and the Arrow streams
        # between them are read from the same buffer.
        self.rfile = sock.makefile("rb")
        self._send_lock = threading.Lock()
        # ``rfile`` holds the descriptor open until it is closed itself; closing it
        # while another thread reads from it could deadlock on its buffer lock, so
        # the last reader out closes it once the channel is closing.
        self._state = threading.Lock()
        self._readers = 0
        self._closing = False

    # The server side speaks first, so a client that cannot answer learns nothing.
    @classmethod
    def accept(cls, sock: socket.socket, secret: bytes, timeout: float = 10.0) -> "Channel":
        sock.settimeout(timeout)
        server_nonce = os.urandom(_NONCE)
        sock.sendall(server_nonce)
        reply = recv_exact(sock, _NONCE + 32)
        client_nonce, proof = reply[:_NONCE], reply[_NONCE:]
        if not hmac.compare_digest(proof, _mac(secret, b"client", server_nonce, client_nonce)):
            raise AuthenticationError("peer failed to authenticate with the cluster secret")
        sock.sendall(_mac(secret, b"server", client_nonce, server_nonce))
        sock.settimeout(None)
        return cls(sock)

    @classmethod
    def connect(cls, sock: socket.socket, secret: bytes, timeout: float = 10.0) -> "Channel":
        sock.settimeout(timeout)
        server_nonce = recv_exact(sock, _NONCE)
        client_nonce = os.urandom(_NONCE)
        sock.sendall(client_nonce + _mac(secret, b"client", server_nonce, client_nonce))
        try:
            proof = recv_exact(sock, 32)
        except ConnectionError:
            raise AuthenticationError("the server closed the connection during authentication "
                                      "(wrong cluster secret?)") from None
        if not hmac.compare_digest(proof, _mac(secret, b"server", client_nonce, server_nonce)):
            raise AuthenticationError("server failed to prove it holds the cluster secret")
        sock.settimeout(None)
        return cls(sock)

    def send_bytes(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(_LEN.pack(len(data)) + data)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a read of ``rfile`` (a message, an Arrow stream)."""
        with self._state:
            if self._closing:
                raise ConnectionError("the channel is closed")
            self._readers += 1
        try:
            yield
        finally:
            with self._state:
                self._readers -= 1
                if self._closing and not self._readers:
                    self.rfile.close()

    def _read(self, n: int) -> bytes:
        with self.reading():
            data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionError(f"connection closed by the peer ({len(data)} of {n} bytes read)")
        return data

    def recv_bytes(self) -> bytes:
        (n,) = _LEN.unpack(self._read(_LEN.size))
        if n > MAX_MESSAGE:
            raise OrcaRuntimeError(f"message of {n} bytes is over the {MAX_MESSAGE} limit")
        return self._read(n)

    def write(self, data) -> int:
        """File-like sink for ``pyarrow.ipc.new_stream``: unbuffered, so the stream
        and the messages around it reach the socket in order."""
        with self._send_lock:
            self.sock.sendall(data)
        return len(data)

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def flush(self) -> None:
        pass

    def send(self, obj) -> None:
        self.send_bytes(json.dumps(obj).encode())

    def recv(self):
        return json.loads(self.recv_bytes())

    def settimeout(self, timeout: Optional[float]) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        """Shut the connection down (waking a thread blocked reading) and release
        the descriptor: now, or when that reader is out."""
        with self._state:
            if self._closing:
                return
            self._closing = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            if not self._readers:
                self.rfile.close()


def connect_tcp(host: str, port: int, secret: bytes, timeout: float = 30.0) -> Channel:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Channel.connect(sock, secret, timeout)


def connect_unix(path: str, secret: bytes, timeout: float = 30.0) -> Channel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return Channel.connect(sock, secret, timeout)


def serve_connections(server: socket.socket, secret: bytes, handle: Callable[[Channel], None],
                      name: str, what: str,
                      admit: Callable[[socket.socket], bool] = lambda sock: True
                      ) -> threading.Thread:
    """Accept on the listening ``server`` until it is closed, a thread (``name``) per
    connection that ``admit`` lets in: the peer authenticates, then
    ``handle(channel)`` runs, and the channel is closed after it. A peer that fails,
    or a connection that breaks, is logged (as ``what``'s) and dropped."""
    def serve(sock: socket.socket) -> None:
        try:
            channel = Channel.accept(sock, secret)
        except (OSError, ConnectionError) as e:
            log.warning("%s refused a connection: %s", what, e)
            sock.close()
            return
        try:
            handle(channel)
        except (OSError, ConnectionError) as e:
            log.warning("a connection to %s broke: %s", what, e)
        finally:
            channel.close()

    def accept_loop() -> None:
        while True:
            try:
                sock, _ = server.accept()
            except OSError as e:
                if server.fileno() < 0:  # closed: the server is done
                    return
                # out of descriptors, say: the server must outlive it
                log.warning("%s could not accept a connection: %s", what, e)
                time.sleep(0.1)  # a back-off, not a wait for anything
                continue
            if not admit(sock):
                log.warning("%s refused a connection from another user", what)
                sock.close()
                continue
            threading.Thread(target=serve, args=(sock,), name=f"{name}-conn",
                             daemon=True).start()

    thread = threading.Thread(target=accept_loop, name=f"{name}-accept", daemon=True)
    thread.start()
    return thread


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket."""
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    struct.calcsize("3i")))
    return uid

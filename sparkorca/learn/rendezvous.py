"""The workers' torch.distributed rendezvous store, served by rank 0 over the node
layer's authenticated channels: torch's TCPStore answers anyone who reaches it,
and the workers find each other's addresses there (a stranger who can write it
could redirect a worker's connections).

Rank 0 keeps the keys and answers the others' requests (JSON, values base64);
every connection first passes the mutual HMAC challenge with the fit's secret.
"""

from __future__ import annotations

import base64
import datetime
import functools
import socket
import threading
from typing import Dict, List, Optional

from ..errors import OrcaRuntimeError


class _Keys:
    """The store's keys, and waits for them (rank 0's)."""

    def __init__(self) -> None:
        self.values: Dict[str, bytes] = {}
        self.cond = threading.Condition()

    def _waited(self, keys: List[str], timeout: float) -> None:
        if not self.cond.wait_for(lambda: all(k in self.values for k in keys), timeout):
            missing = [k for k in keys if k not in self.values]
            raise OrcaRuntimeError(f"timed out after {timeout:g}s waiting for the workers' "
                                   f"rendezvous keys {missing}")

    def call(self, req: dict) -> dict:
        op, key = req["op"], req.get("key", "")
        with self.cond:
            if op == "set":
                self.values[key] = base64.b64decode(req["value"])
                self.cond.notify_all()
                return {}
            if op == "get":
                self._waited([key], req["timeout"])
                return {"value": base64.b64encode(self.values[key]).decode()}
            if op == "add":
                value = int(self.values.get(key, b"0")) + int(req["amount"])
                self.values[key] = str(value).encode()
                self.cond.notify_all()
                return {"value": value}
            if op == "compare_set":
                current = self.values.get(key)
                expected, desired = (base64.b64decode(req[k]) for k in ("expected", "desired"))
                if current == expected or (current is None and not expected):
                    self.values[key] = current = desired
                    self.cond.notify_all()
                return {"value": base64.b64encode(current or b"").decode()}
            if op == "wait":
                self._waited(req["keys"], req["timeout"])
                return {}
            if op == "check":
                return {"value": all(k in self.values for k in req["keys"])}
            if op == "num_keys":
                return {"value": len(self.values)}
            if op == "delete":
                return {"value": self.values.pop(key, None) is not None}
        raise OrcaRuntimeError(f"unknown rendezvous store request {op!r}")


class _Server:
    """Rank 0's side: a thread per authenticated connection."""

    def __init__(self, sock: socket.socket, secret: bytes, keys: _Keys) -> None:
        self.sock, self.secret, self.keys = sock, secret, keys
        self.channels: list = []
        threading.Thread(target=self._accept_loop, name="sparkorca-rendezvous",
                         daemon=True).start()

    def _accept_loop(self) -> None:
        from ..node.channel import Channel
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            try:
                channel = Channel.accept(conn, self.secret)
            except Exception:  # not a worker of this fit: dropped
                conn.close()
                continue
            self.channels.append(channel)
            threading.Thread(target=self._serve, args=(channel,), daemon=True,
                             name="sparkorca-rendezvous-peer").start()

    def _serve(self, channel) -> None:
        try:
            while True:
                req = channel.recv()
                try:
                    reply = self.keys.call(req)
                except Exception as e:
                    reply = {"error": str(e)}
                channel.send(reply)
        except (OSError, ValueError):  # the worker closed, or the server did
            channel.close()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop (close would not)
        except OSError:
            pass
        self.sock.close()
        for channel in self.channels:
            channel.close()


@functools.lru_cache(maxsize=None)
def _store_class():
    import torch.distributed as dist

    class ChannelStore(dist.Store):
        """A torch.distributed Store: rank 0's keys, locally or over a channel."""

        def __init__(self, keys: Optional[_Keys], channel, server: Optional[_Server],
                     timeout: datetime.timedelta) -> None:
            super().__init__()
            self._keys, self._channel, self._server = keys, channel, server
            self._timeout = timeout.total_seconds()
            self._lock = threading.Lock()

        def _call(self, **req):
            if self._keys is not None:
                return self._keys.call(req)
            with self._lock:
                self._channel.send(req)
                reply = self._channel.recv()
            if "error" in reply:
                raise OrcaRuntimeError(reply["error"])
            return reply

        def set(self, key, value):
            data = value.encode() if isinstance(value, str) else bytes(value)
            self._call(op="set", key=key, value=base64.b64encode(data).decode())

        def get(self, key):
            return base64.b64decode(self._call(op="get", key=key,
                                               timeout=self._timeout)["value"])

        def add(self, key, amount):
            return self._call(op="add", key=key, amount=int(amount))["value"]

        def compare_set(self, key, expected, desired):
            enc = [base64.b64encode(v.encode() if isinstance(v, str) else bytes(v)).decode()
                   for v in (expected, desired)]
            return base64.b64decode(self._call(op="compare_set", key=key, expected=enc[0],
                                               desired=enc[1])["value"])

        def wait(self, keys, timeout=None):
            seconds = timeout.total_seconds() if timeout is not None else self._timeout
            self._call(op="wait", keys=list(keys), timeout=seconds)

        def check(self, keys):
            return self._call(op="check", keys=list(keys))["value"]

        def num_keys(self):
            return self._call(op="num_keys")["value"]

        def delete_key(self, key):
            return self._call(op="delete", key=key)["value"]

        def set_timeout(self, timeout):
            self._timeout = timeout.total_seconds()

        def close(self) -> None:
            if self._server is not None:
                self._server.close()
            if self._channel is not None:
                self._channel.close()

    return ChannelStore


def store(addr: str, port: int, rank: int, secret: bytes, timeout: datetime.timedelta):
    """Rank 0: serve the store on ``addr:port``; the others: connect to it (retried
    until ``timeout``, as rank 0 may not be listening yet)."""
    from ..node.channel import AuthenticationError, connect_tcp
    cls = _store_class()
    if rank == 0:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(64)
        keys = _Keys()
        return cls(keys, None, _Server(sock, secret, keys), timeout)
    from .._wait import wait_for

    def connected():
        try:
            return cls(None, connect_tcp(addr, port, secret, 30.0), None, timeout)
        except AuthenticationError:
            raise
        except OSError:  # rank 0 binds its port as it starts
            return None
    return wait_for(connected, timeout.total_seconds(),
                    f"worker {rank} to reach the rendezvous store of worker 0 at {addr}:{port}")

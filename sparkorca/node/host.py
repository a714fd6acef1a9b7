"""This machine as nodes see it: the address to bind, scratch dirs, held ports."""

from __future__ import annotations

import os
import socket
import tempfile


def node_ip() -> str:
    """The address other machines reach this one at, for binding services.

    ``SPARKORCA_NODE_IP`` wins. Otherwise a UDP connect (which sends nothing) asks
    the kernel which interface routes outwards; without a route (an offline
    laptop) the hostname's address is used.
    """
    env = os.environ.get("SPARKORCA_NODE_IP")
    if env:
        return env
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))
            return s.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def temp_root() -> str:
    """The directory node scratch dirs go in: TMPDIR (tempfile's rules), else /tmp."""
    return tempfile.gettempdir()


def node_dir(kind: str, cluster_id: str, name: object) -> str:
    """A node's scratch dir: known in advance, so processes on the same executor can
    find it (``sparkorca.ray.connect()``), and short, for the unix sockets inside."""
    return os.path.join(temp_root(), f"sparkorca-{kind}-{cluster_id}-{name}")


class PortReservation:
    """A port held for a server that binds it later with SO_REUSEPORT (gRPC's default).

    The holding socket binds every address and never listens. While it is open no
    other socket can bind the port (the JVMs starting at the same time, outgoing
    connections picking an ephemeral port) except a same-user socket that also sets
    SO_REUSEPORT, so the server that was promised the port still gets it. A probe
    that closes before the server binds would leave that window open.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._sock.bind(("", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

"""This machine as nodes see it: the address to bind, scratch dirs."""

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

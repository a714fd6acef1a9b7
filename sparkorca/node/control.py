"""The node's side of its control connection to the driver's hub."""

from __future__ import annotations

import threading
from typing import Callable

from ..errors import OrcaRuntimeError
from .channel import Channel, connect_tcp
from .config import NodeConfig


def register(config: NodeConfig, info: dict, timeout: float = 30.0) -> Channel:
    """Connect to the hub, authenticate, and register as ``config.name``; raises if
    the driver does not take the node."""
    channel = connect_tcp(config.hub_host, config.hub_port, config.secret_bytes, timeout)
    channel.send({"type": "register", "node": config.name, **info})
    reply = channel.recv()
    if reply.get("type") != "registered":
        channel.close()
        raise OrcaRuntimeError(f"the driver refused node {config.name!r}: {reply.get('why')}")
    return channel


def serve(channel: Channel, on_message: Callable[[dict], None],
          on_stop: Callable[[str], None]) -> threading.Thread:
    """Read the driver's messages in a thread. ``stop``, and the driver going away,
    end the loop through ``on_stop(reason)``; anything else goes to ``on_message``."""
    def loop() -> None:
        while True:
            try:
                msg = channel.recv()
            except (OSError, ConnectionError, ValueError):
                on_stop("the driver went away")
                return
            if msg.get("type") in ("stop", "abort"):
                on_stop(msg.get("why") or "the driver asked the node to stop")
                return
            on_message(msg)
    thread = threading.Thread(target=loop, name="sparkorca-node-control", daemon=True)
    thread.start()
    return thread


def report(channel: Channel, msg: dict) -> None:
    """Send ``msg`` if the driver still listens."""
    try:
        channel.send(msg)
    except (OSError, ConnectionError):
        pass

"""The same-machine leg of the Spark -> Ray hand-off (``sparkorca.data.to_ray``).

A Spark task writes each block of its partition as an Arrow stream into an
anonymous memory file (``memfd``, sealed once written) and passes the descriptor
to its node's holder over a local socket; the holder maps the file and puts the
table into the object store. The data is copied once on its way into the store,
and the task never joins Ray: a Python worker's import of Ray and its connection
cost about a CPU-second on a node whose CPUs Spark is using.

The socket lives in Linux's abstract namespace (no file to leave behind when a
holder is killed), under a random name the driver picks, reachable from the
machine's (the network namespace's) processes, which can also list it. So both
ends check that the other runs as the same user, and then prove they hold this
socket's key (the handshake of every channel of sparkorca, ``node.channel``, with
a key derived from the context's secret and the socket's name: a peer cannot relay
one holder's handshake to another). The driver gives the secret to the holders
through Ray and to the tasks with the task. What a peer sends is JSON and Arrow,
never pickled. Without memfd (not Linux) the holder serves no socket and tasks
take the Ray path.

Only the handshake of ``Channel`` is used here: the messages are SEQPACKET
datagrams, each whole, a block's descriptor attached to its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import mmap
import os
import secrets
import socket
import sys
import traceback
from typing import Callable, Iterable, Iterator, Optional

from ..errors import OrcaRuntimeError
from ..node.channel import Channel, peer_uid, serve_connections

log = logging.getLogger(__name__)

# blocks handed over and not yet put: the task writes the next one meanwhile
WINDOW = 2
_MAX_MESSAGE_BYTES = 4096
_SEALS = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0) \
    | getattr(fcntl, "F_SEAL_WRITE", 0)


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


def new_address() -> str:
    """A fresh name for a holder's socket."""
    return f"sparkorca-blocks-{secrets.token_hex(12)}"


def _key(secret: bytes, address: str) -> bytes:
    return hmac.new(secret, address.encode(), hashlib.sha256).digest()


def _socket() -> socket.socket:
    # SEQPACKET keeps messages whole, so each descriptor arrives with its own message
    return socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def _same_user(sock: socket.socket) -> bool:
    return peer_uid(sock) == os.getuid()


def _recv(sock: socket.socket, what: str) -> dict:
    data = sock.recv(_MAX_MESSAGE_BYTES)
    if not data:
        raise ConnectionError(f"the peer closed the connection while {what}")  # an OSError
    return json.loads(data)


class BlockServer:
    """The holder's side: ``put(key, table)`` for every block a task hands over,
    key = (tag, partition, attempt, block). Serves until the process ends."""

    def __init__(self, address: str, secret: bytes, put: Callable[[tuple, object], None]):
        self.put = put
        self.server = _socket()
        self.server.bind("\0" + address)
        self.server.listen(64)
        serve_connections(self.server, _key(secret, address), self._serve, "sparkorca-blocks",
                          f"the block socket {address}", admit=_same_user)

    def close(self) -> None:
        """Stop accepting (a holder needs not: its process ends with Ray)."""
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept loop
        except OSError:
            pass
        self.server.close()

    def _serve(self, channel: Channel) -> None:
        sock = channel.sock
        sock.settimeout(None)
        header = _recv(sock, "sending the partition's header")
        prefix = (str(header["tag"]), int(header["partition"]), int(header["attempt"]))
        failed = False
        while True:
            data, fds, flags, _ = socket.recv_fds(sock, _MAX_MESSAGE_BYTES, 1,
                                                  socket.MSG_CMSG_CLOEXEC)
            try:  # what a task sent after it failed (before it read why) is dropped
                reply = self._take(prefix, data, fds, flags) if data and not failed else None
            finally:  # before the reply: the task's memory goes back as it reads it
                for fd in fds:
                    os.close(fd)
            if not data:  # the task is done (or gone: its attempt does not count)
                return
            if reply is not None:
                sock.send(json.dumps(reply).encode())
                failed = "error" in reply

    def _take(self, prefix: tuple, data: bytes, fds: list, flags: int) -> dict:
        """Put the block a message brought; the reply to it."""
        block = None
        try:
            block = int(json.loads(data)["block"])
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(fds) != 1:
                raise OrcaRuntimeError(f"block {block} came with {len(fds)} descriptors "
                                       f"(message flags {flags:#x})")
            self.put(prefix + (block,), _read_table(fds[0]))
        except Exception as e:  # the task fails with it
            # as text: a record holding the traceback would hold the block's mapping
            log.error("sparkorca-blocks: block %s of %s:\n%s", block, prefix,
                      traceback.format_exc())
            return {"block": block, "error": f"{type(e).__name__}: {e}"}
        return {"block": block}


def _read_table(fd: int):
    """The Arrow stream in the sealed memory file ``fd`` as a table, zero-copy: its
    buffers point into the mapping, which goes when the last of them does. (Sealed:
    the sender can no longer shrink it under the mapping, which would kill this
    process on the next read.)"""
    import pyarrow as pa
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS) if _SEALS else 0
    if seals & _SEALS != _SEALS:
        raise OrcaRuntimeError("the block's memory file is not sealed against changes")
    size = os.fstat(fd).st_size
    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    return pa.ipc.open_stream(pa.py_buffer(mapped)).read_all()


def connect(address: str, secret: bytes, timeout: float = 30.0) -> Optional[Channel]:
    """A channel to the holder at ``address``, or None when nothing listens there
    (not started, or it serves no socket): the caller takes the Ray path."""
    sock = _socket()
    try:
        sock.settimeout(timeout)
        try:
            sock.connect("\0" + address)
        except OSError as e:  # ECONNREFUSED: no such socket
            log.debug("no block server at %s (%s): the Ray path", address, e)
            sock.close()
            return None
        if not _same_user(sock):
            raise OrcaRuntimeError(f"the block socket {address} belongs to another user")
        return Channel.connect(sock, _key(secret, address), timeout)
    except BaseException:
        sock.close()
        raise


def send_blocks(channel: Channel, tag: str, partition: int, attempt: int,
                blocks: Iterable[list]) -> int:
    """Hand each block (a list of record batches) to the holder; returns how many,
    once the holder has put every one (until then this process owns the data)."""
    sock = channel.sock
    sock.settimeout(None)  # a put may wait for the store to spill; a dead holder closes
    sent = acked = 0

    def ack() -> None:
        with _naming_partition_on_break(partition):
            reply = _recv(sock, f"putting block {acked} of partition {partition}")
        if "error" in reply:
            raise OrcaRuntimeError(f"Spark -> Ray: the holder could not put block "
                                   f"{reply['block']} of partition {partition}: {reply['error']}")

    with _naming_partition_on_break(partition):
        sock.send(json.dumps({"tag": tag, "partition": partition, "attempt": attempt}).encode())
    for block in blocks:
        fd = _write_block(block)
        try:
            with _naming_partition_on_break(partition):
                socket.send_fds(sock, [json.dumps({"block": sent}).encode()], [fd])
        finally:
            os.close(fd)
        sent += 1
        while sent - acked > WINDOW:
            ack()
            acked += 1
    while acked < sent:
        ack()
        acked += 1
    return sent


@contextlib.contextmanager
def _naming_partition_on_break(partition: int) -> Iterator[None]:
    """Around the task's socket calls: a broken connection says whose it was."""
    try:
        yield
    except OSError as e:
        raise OrcaRuntimeError(f"Spark -> Ray: the connection to this node's holder broke "
                               f"during partition {partition} (the holder or its Ray node "
                               f"is gone?): {e}") from e


def _write_block(batches: list) -> int:
    """A sealed memory file holding ``batches`` as an Arrow stream; its descriptor."""
    import pyarrow as pa
    fd = os.memfd_create("sparkorca-block", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with pa.OSFile(f"/proc/self/fd/{fd}", "wb") as sink, \
                pa.ipc.new_stream(sink, batches[0].schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        if _SEALS:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd

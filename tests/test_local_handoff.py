"""The same-machine leg of the Spark -> Ray hand-off without engines: blocks pass as
memory files over an authenticated local socket, to a ``put`` that records them."""

import json
import os
import socket
import threading

import psutil
import pyarrow as pa
import pytest

from sparkorca._wait import wait_for
from sparkorca.data import local_handoff
from sparkorca.errors import OrcaRuntimeError
from sparkorca.node.channel import AuthenticationError

pytestmark = pytest.mark.skipif(not local_handoff.supported(), reason="Linux (memfd) only")

SECRET = b"s" * 32


def batches(start, n, rows=1000):
    return [pa.RecordBatch.from_pydict({"id": list(range(start + i * rows, start + (i + 1) * rows)),
                                        "x": [0.5] * rows}) for i in range(n)]


class Recorder:
    def __init__(self, fail_at=None, die_at=None):
        self.tables = {}
        self.fail_at, self.die_at = fail_at, die_at
        self.lock = threading.Lock()

    def put(self, key, table):
        if key[3] == self.fail_at:
            raise MemoryError("the object store is full")
        if key[3] == self.die_at:  # the holder's serving thread ends mid-partition
            del table  # (pytest keeps the thread's exception, and with it this frame)
            raise SystemExit
        with self.lock:
            self.tables[key] = table.to_pydict()  # a copy: the mapping goes with the table


@pytest.fixture
def serve():
    servers = []

    def start(recorder):
        address = local_handoff.new_address()
        servers.append(local_handoff.BlockServer(address, SECRET, recorder.put))
        return address
    yield start
    for server in servers:
        server.close()


def memory_files() -> int:
    """This process's descriptors and mappings of block memory files."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return sum("sparkorca-block" in p for p in links) + sum(
        "sparkorca-block" in m.path for m in psutil.Process().memory_maps())


def test_blocks_reach_the_holder_whole_and_in_order(serve):
    recorder = Recorder()
    address = serve(recorder)
    blocks = [batches(0, 2), batches(2000, 1), batches(3000, 3), batches(6000, 1)]
    channel = local_handoff.connect(address, SECRET)
    assert channel is not None
    try:  # more blocks than the window: the task waits for the holder's puts
        assert local_handoff.send_blocks(channel, "t1", 4, 1, iter(blocks)) == 4
    finally:
        channel.close()
    assert sorted(recorder.tables) == [("t1", 4, 1, b) for b in range(4)]
    for b, block in enumerate(blocks):  # every put is done before send_blocks returns
        assert recorder.tables[("t1", 4, 1, b)] == pa.Table.from_batches(block).to_pydict()
    assert memory_files() == 0  # the task's descriptors are closed; the holder's maps gone


def test_a_peer_without_the_secret_is_refused_and_nothing_is_put(serve):
    recorder = Recorder()
    address = serve(recorder)
    with pytest.raises(AuthenticationError):
        local_handoff.connect(address, b"w" * 32)
    # a peer that skips the handshake and sends a header and a block at once
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw.connect("\0" + address)
    fd = local_handoff._write_block(batches(0, 1))
    raw.send(json.dumps({"tag": "x", "partition": 0, "attempt": 0}).encode())
    socket.send_fds(raw, [json.dumps({"block": 0}).encode()], [fd])
    os.close(fd)
    raw.shutdown(socket.SHUT_WR)  # nothing more: the server's handshake read ends
    raw.settimeout(10)
    while raw.recv(4096):  # the server's nonce, then the close that ends it
        pass
    raw.close()
    wait_for(lambda: memory_files() == 0, 10, "the refused block's memory to go")
    assert recorder.tables == {}


def test_another_holders_key_does_not_open_this_one(serve):
    address, other = serve(Recorder()), local_handoff.new_address()
    channel = local_handoff.connect(address, SECRET)  # the same secret, this socket's key
    assert channel is not None
    channel.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect("\0" + address)
    with pytest.raises(AuthenticationError):  # a proof made for another socket's name
        local_handoff.Channel.connect(sock, local_handoff._key(SECRET, other))
    sock.close()


def test_no_server_means_the_ray_path():
    assert local_handoff.connect(local_handoff.new_address(), SECRET) is None


def test_a_put_that_fails_fails_the_task_naming_the_block(serve):
    recorder = Recorder(fail_at=1)
    address = serve(recorder)
    channel = local_handoff.connect(address, SECRET)
    assert channel is not None
    try:
        with pytest.raises(OrcaRuntimeError, match="block 1 of partition 3.*MemoryError.*full"):
            local_handoff.send_blocks(channel, "t2", 3, 0, iter([batches(0, 1)] * 6))
    finally:
        channel.close()
    # what the task sent before it read the error was dropped, its memory too
    wait_for(lambda: memory_files() == 0, 10, "the dropped blocks' memory to go")
    assert list(recorder.tables) == [("t2", 3, 0, 0)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_holder_gone_mid_partition_fails_the_task():
    recorder = Recorder(die_at=1)
    address = local_handoff.new_address()
    server = local_handoff.BlockServer(address, SECRET, recorder.put)
    try:
        channel = local_handoff.connect(address, SECRET)
        assert channel is not None
        with pytest.raises(OrcaRuntimeError, match="connection to this node's holder broke "
                                                   "during partition 5"):
            local_handoff.send_blocks(channel, "t4", 5, 0, iter([batches(0, 1)] * 6))
        channel.close()
    finally:
        server.close()
    wait_for(lambda: memory_files() == 0, 10, "the blocks' memory to go")


def test_a_task_that_dies_mid_partition_leaves_no_memory_file(serve):
    recorder = Recorder()
    address = serve(recorder)
    channel = local_handoff.connect(address, SECRET)
    assert channel is not None

    def dies():
        yield batches(0, 1)
        raise RuntimeError("the task failed")
    with pytest.raises(RuntimeError, match="the task failed"):
        local_handoff.send_blocks(channel, "t3", 0, 0, dies())
    channel.close()
    wait_for(lambda: memory_files() == 0, 10, "the block's memory to go")

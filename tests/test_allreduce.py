"""The Estimators' gradient exchange (sparkorca.learn.allreduce) between real
torch.distributed processes (their group made by learn.gloo over
learn.rendezvous's store): the sum it gives every worker, the fallback to gloo,
and the secret the exchange and the store demand."""

import multiprocessing as mp
import os
import socket

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, secrets, connect_timeout, out):
    import torch.distributed as dist

    from sparkorca.learn.allreduce import PeerSum
    from sparkorca.learn.gloo import init_process_group
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), SPARKORCA_NODE_IP="127.0.0.1")
    torch.set_num_threads(1)
    rendezvous = init_process_group(b"r" * 32)  # the Estimators' group and its store
    try:
        summer = PeerSum.connect(secrets[rank], connect_timeout=connect_timeout)
    except Exception as e:
        out.put((rank, "error", f"{type(e).__name__}: {e}"))
        dist.destroy_process_group()
        rendezvous.close()
        return
    try:
        results = []
        for n in (1, 1000, 300_000):  # 300,000 floats: more than a socket buffer holds
            values = torch.from_numpy(
                np.random.default_rng(rank * 10 + n).normal(size=n).astype(np.float32))
            results.append(summer.sum_(values).numpy().tobytes())
        half = torch.full((1000,), float(rank + 1), dtype=torch.bfloat16)  # no numpy dtype
        results.append(summer.sum_(half).float().numpy().tobytes())
        out.put((rank, "ok", (sorted(summer.partners), results)))
    finally:
        summer.close()
        dist.destroy_process_group()
        rendezvous.close()


def _run(world, secrets=None, connect_timeout=60.0):
    secrets = secrets or [b"s" * 32] * world
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, secrets, connect_timeout, out))
             for r in range(world)]
    for p in procs:
        p.start()
    got = dict((r, (kind, value)) for r, kind, value in (out.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    return got


def _expected(world, n):
    parts = [np.random.default_rng(r * 10 + n).normal(size=n).astype(np.float32)
             for r in range(world)]
    return np.sum(np.stack(parts).astype(np.float64), axis=0)


@pytest.mark.parametrize("world", [2, 4, 3])
def test_every_worker_gets_bitwise_the_same_sum(world):
    got = _run(world)
    assert all(kind == "ok" for kind, _ in got.values()), got
    for rank, (_, (partners, _)) in got.items():
        # recursive doubling on powers of two (one partner per round); gloo otherwise
        assert partners == ([] if world == 3 else
                            sorted(rank ^ (1 << k) for k in range(world.bit_length() - 1)))
    for i, n in enumerate((1, 1000, 300_000)):
        sums = {got[r][1][1][i] for r in range(world)}
        assert len(sums) == 1  # bitwise identical on every worker
        total = np.frombuffer(sums.pop(), dtype=np.float32)
        np.testing.assert_allclose(total, _expected(world, n), rtol=1e-5, atol=1e-5)
    halves = {np.frombuffer(got[r][1][1][3], dtype=np.float32).tobytes() for r in range(world)}
    assert len(halves) == 1
    assert set(np.frombuffer(halves.pop(), dtype=np.float32)) == {world * (world + 1) / 2}


def test_a_worker_without_the_secret_is_refused():
    got = _run(2, [b"a" * 32, b"b" * 32], connect_timeout=2.0)
    # the connecting worker learns it was refused; the listening one drops it and
    # waits for its partner until its deadline, naming the worker that never came
    assert got[1][0] == "error" and "secret" in got[1][1], got
    assert got[0][0] == "error" and "waiting for workers [1]" in got[0][1], got


def test_the_rendezvous_store_answers_only_the_fits_workers():
    import datetime

    from sparkorca.learn.rendezvous import store
    from sparkorca.node.channel import AuthenticationError
    port = _free_port()
    timeout = datetime.timedelta(seconds=10)
    server = store("127.0.0.1", port, 0, b"k" * 32, timeout)
    try:
        with socket.create_connection(("127.0.0.1", port)) as stranger:
            # as long as the answer to its challenge (all read: a hang-up, not a reset)
            stranger.sendall(b"GET / HTTP/1.0\r\n\r\n".ljust(64, b"x"))
            stranger.settimeout(15)
            heard = b""
            while chunk := stranger.recv(100):
                heard += chunk
            assert len(heard) == 32  # the server's challenge nonce, and not a byte more
        with pytest.raises(AuthenticationError):
            store("127.0.0.1", port, 1, b"wrong" * 8, timeout)
        client = store("127.0.0.1", port, 1, b"k" * 32, timeout)
        try:
            client.set("a", b"\x00\xff")
            server.set("b", "text")
            assert server.get("a") == b"\x00\xff" and client.get("b") == b"text"
            assert client.add("n", 2) == 2 and server.add("n", 3) == 5
            client.wait(["a", "b"])
            assert client.check(["a", "n"]) and not client.check(["zzz"])
            assert client.compare_set("c", b"", b"1") == b"1"
            assert client.compare_set("c", b"0", b"2") == b"1"  # expected differs: kept
            assert client.num_keys() == 4 and client.delete_key("c")
            client.set_timeout(datetime.timedelta(seconds=0.5))
            with pytest.raises(Exception, match="timed out .* rendezvous keys"):
                client.get("never")
        finally:
            client.close()
    finally:
        server.close()

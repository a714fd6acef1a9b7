"""The Estimators' process group (learn.process_group over learn.mesh and
learn.rendezvous's store) between real torch.distributed processes: what each
collective gives every worker, and the secret the mesh and the store demand."""

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


SIZES = (1, 1000, 300_000, 1_100_000)  # floats; 300,000: more than a socket buffer
# holds; 1,100,000: over allreduce.LARGE, the ring among more than two workers


def _listening_ports() -> set:
    import psutil
    return {c.laddr.port for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


def _worker(rank, world, port, out):
    import torch.distributed as dist

    from sparkorca.learn.process_group import gather_json, worker_group
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), SPARKORCA_NODE_IP="127.0.0.1")
    torch.set_num_threads(1)
    try:
        with worker_group(b"r" * 32) as group:  # the Estimators' group and its store
            results = []
            for n in SIZES:
                values = torch.from_numpy(
                    np.random.default_rng(rank * 10 + n).normal(size=n).astype(np.float32))
                results.append(group.sum_(values).numpy().tobytes())
            half = torch.full((1000,), float(rank + 1), dtype=torch.bfloat16)  # no numpy dtype
            results.append(group.sum_(half).float().numpy().tobytes())
            # what DDP, the Estimators and users' callbacks call through torch.distributed
            most = torch.tensor([rank, -rank], dtype=torch.int64)
            dist.all_reduce(most, op=dist.ReduceOp.MAX)
            zeros = torch.tensor([0.0, -0.0] if rank == 0 else [-0.0, 0.0])  # max keeps one
            dist.all_reduce(zeros, op=dist.ReduceOp.MAX)
            counts = torch.ones(2, dtype=torch.int64)
            try:
                dist.all_reduce(counts, op=dist.ReduceOp.AVG)
                int_average = ""
            except Exception as e:  # refused before anything is summed
                int_average = f"{e} {counts.tolist()}"
            mean = torch.full((5,), float(rank))
            dist.all_reduce(mean, op=dist.ReduceOp.AVG)
            column = torch.arange(12.0).reshape(3, 4)[:, 1] * (rank + 1)  # not contiguous
            dist.all_reduce(column)
            sent = torch.arange(6.0) if rank == world - 1 else torch.zeros(6)
            dist.broadcast(sent, src=world - 1)
            parts = [torch.zeros(2) for _ in range(world)]
            dist.all_gather(parts, torch.tensor([rank, rank * 10.0]))
            flat = torch.zeros(world * 2)
            dist.all_gather_into_tensor(flat, torch.tensor([rank, -rank], dtype=torch.float32))
            dist.barrier()
            reduced = torch.full((2,), float(rank + 1))
            dist.reduce(reduced, dst=0)
            try:
                dist.reduce_scatter(torch.zeros(1), [torch.ones(1)] * world)
                unsupported = ""
            except Exception as e:  # named, rather than torch's "No backend type ..."
                unsupported = str(e)
            model = torch.nn.Linear(3, 2)
            torch.nn.init.constant_(model.weight, float(rank))  # rank 0's reaches every worker
            torch.nn.parallel.DistributedDataParallel(model)
            bias = model.bias.detach().clone()  # rank 0's, on every worker (DDP's)
            dist.all_reduce(model.bias)  # a parameter (requires grad) is summed in place
            out.put((rank, "ok", {
                "backend": dist.get_backend(), "results": results,
                "max": most.tolist(), "mean": mean.tolist(), "column": column.tolist(),
                "broadcast": sent.tolist(), "gathered": [p.tolist() for p in parts],
                "flat": flat.tolist(), "json": gather_json({"rank": rank}),
                "reduced": reduced.tolist(), "unsupported": unsupported,
                "zeros": zeros.numpy().tobytes(), "int_average": int_average,
                "weight": model.weight.detach().flatten().tolist(),
                "bias": (bias * world).tolist(), "bias_after": model.bias.tolist(),
                "listening": sorted(_listening_ports() - {port})}))
    except Exception as e:
        import traceback
        out.put((rank, "error", f"{type(e).__name__}: {e} {traceback.format_exc()}"))


def _mesh_worker(rank, world, port, secrets, connect_timeout, out):
    import datetime

    from sparkorca.learn.mesh import Mesh
    from sparkorca.learn.rendezvous import store
    os.environ["SPARKORCA_NODE_IP"] = "127.0.0.1"
    keys = store("127.0.0.1", port, rank, b"r" * 32, datetime.timedelta(seconds=60))
    try:
        Mesh.connect(keys, rank, world, secrets[rank], 60.0, connect_timeout).close()
        out.put((rank, "ok", None))
    except Exception as e:
        out.put((rank, "error", f"{type(e).__name__}: {e}"))
    finally:
        keys.close()


def _run(world, target=_worker, *args):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, out)) for r in range(world)]
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
def test_every_worker_gets_bitwise_the_same_results(world):
    got = _run(world)
    assert all(kind == "ok" for kind, _ in got.values()), got
    for i, n in enumerate(SIZES):
        sums = {got[r][1]["results"][i] for r in range(world)}
        assert len(sums) == 1  # bitwise identical on every worker
        total = np.frombuffer(sums.pop(), dtype=np.float32)
        np.testing.assert_allclose(total, _expected(world, n), rtol=1e-5, atol=1e-5)
    halves = {np.frombuffer(got[r][1]["results"][-1], dtype=np.float32).tobytes()
              for r in range(world)}
    assert len(halves) == 1
    assert set(np.frombuffer(halves.pop(), dtype=np.float32)) == {world * (world + 1) / 2}
    ranks = range(world)
    for rank in ranks:
        seen = got[rank][1]
        assert seen["backend"] == "sparkorca"
        assert seen["max"] == [world - 1, 0]
        assert seen["zeros"] == got[0][1]["zeros"]  # the same bits of zero everywhere
        assert "AVG needs floating point" in seen["int_average"]
        assert seen["int_average"].endswith(" [1, 1]")  # the tensor as it was
        assert seen["mean"] == [sum(ranks) / world] * 5
        assert seen["column"] == [c * world * (world + 1) / 2 for c in (1.0, 5.0, 9.0)]
        assert seen["broadcast"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert seen["gathered"] == [[r, r * 10.0] for r in ranks]
        assert seen["flat"] == [v for r in ranks for v in (r, -r)]
        assert seen["json"] == [{"rank": r} for r in ranks]
        if rank == 0:
            assert seen["reduced"] == [world * (world + 1) / 2] * 2
        assert "reduce_scatter is not supported" in seen["unsupported"]
        assert seen["weight"] == [0.0] * 6  # DDP broadcast rank 0's parameters
        assert seen["bias_after"] == pytest.approx(seen["bias"])
        # once the mesh is up nothing of the group listens (gloo's pairs would);
        # the rendezvous store (rank 0, on the given port) is the fit's only listener
        assert seen["listening"] == [], seen["listening"]


def test_a_worker_without_the_secret_is_refused():
    got = _run(2, _mesh_worker, [b"a" * 32, b"b" * 32], 2.0)
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

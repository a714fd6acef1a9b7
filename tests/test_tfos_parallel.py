"""TFParallel on real Spark (local-cluster[2,1,1024]): the same function on every
executor at once, and TFoS's MNIST inference example on it."""

import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca.cluster import TFParallel
from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError

pytestmark = pytest.mark.engine

# map_funs below travel by value: executors cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


def record_ctx(args, ctx):
    """Write what this copy was told to a file of its own (map_fun's return value is
    ignored, as in TFoS)."""
    from pyspark import BarrierTaskContext
    try:
        BarrierTaskContext.get()
        in_barrier = True
    except Exception:  # not a barrier stage
        in_barrier = False
    record = {"executor_id": ctx.executor_id, "worker_num": ctx.worker_num,
              "num_workers": ctx.num_workers, "job_name": ctx.job_name,
              "task_index": ctx.task_index, "cluster_spec": ctx.cluster_spec,
              "mgr": ctx.mgr, "working_dir": ctx.working_dir, "defaultFS": ctx.defaultFS,
              "absolute": ctx.absolute_path("models/m1"), "in_barrier": in_barrier,
              "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "sum": args["x"] + args["y"],
              "pid": os.getpid()}
    with open(os.path.join(args["out"], f"copy-{ctx.worker_num}-{os.getpid()}.json"), "w") as f:
        json.dump(record, f)


def records(path):
    found = [json.load(open(p)) for p in glob.glob(os.path.join(path, "copy-*.json"))]
    return sorted(found, key=lambda r: r["worker_num"])


@pytest.mark.parametrize("use_barrier", [True, False])
def test_each_copy_runs_once_with_its_context(shared_sc, tmp_path, use_barrier):
    args = {"x": 1, "y": 2, "out": str(tmp_path)}
    assert TFParallel.run(shared_sc, record_ctx, args, 2, use_barrier=use_barrier) is None
    got = records(tmp_path)
    assert [(r["executor_id"], r["worker_num"]) for r in got] == [(0, 0), (1, 1)]
    for r in got:
        assert r["num_workers"] == 2 and r["sum"] == 3
        assert (r["job_name"], r["task_index"], r["cluster_spec"], r["mgr"]) == ("", 0, {}, None)
        assert r["in_barrier"] is use_barrier
        if shutil.which("nvidia-smi") is None:
            assert r["cuda"] == ""  # no GPU: the copies run on the CPU, as in TFoS
        # the driver's cwd, so a relative path means the same file on every executor
        assert r["working_dir"] == os.getcwd()
        assert r["absolute"] == f"file://{os.getcwd()}/models/m1"
        assert r["defaultFS"] == "file://"
    if use_barrier:  # together, so on both 1-core executors
        assert got[0]["pid"] != got[1]["pid"]


def test_a_barrier_run_larger_than_the_slots_fails_at_once_a_plain_one_runs_in_waves(
        shared_sc, tmp_path):
    args = {"x": 1, "y": 2, "out": str(tmp_path)}
    start = time.monotonic()
    with pytest.raises(InvalidArgumentError) as e:
        TFParallel.run(shared_sc, record_ctx, args, 3)
    # Spark itself would retry the barrier stage for 10 minutes before failing it
    assert time.monotonic() - start < 30
    text = str(e.value)
    assert "num_executors=3" in text and "2 task slot(s)" in text
    assert "use_barrier=False" in text and "more executors or cores" in text
    assert records(tmp_path) == []  # nothing ran
    TFParallel.run(shared_sc, record_ctx, args, 3, use_barrier=False)
    got = records(tmp_path)
    assert [r["worker_num"] for r in got] == [0, 1, 2]
    assert {r["num_workers"] for r in got} == {3}


def failing_fun(args, ctx):
    if ctx.worker_num == 1:
        raise ValueError(f"bad input on purpose in copy {ctx.worker_num}")


@pytest.mark.parametrize("use_barrier", [True, False])
def test_an_exception_in_map_fun_reaches_the_driver_with_its_traceback(shared_sc, use_barrier):
    with pytest.raises(OrcaRuntimeError) as e:
        TFParallel.run(shared_sc, failing_fun, None, 2, use_barrier=use_barrier)
    text = str(e.value)
    assert "ValueError: bad input on purpose in copy 1" in text
    assert "Traceback" in text and "failing_fun" in text


def test_bad_arguments_fail_before_any_job(shared_sc, tmp_path):
    args = {"x": 1, "y": 2, "out": str(tmp_path)}
    for kwargs, name in [({"num_executors": 0}, "num_executors"),
                         ({"num_executors": "2"}, "num_executors"),
                         ({"num_executors": 2, "use_barrier": "yes"}, "use_barrier"),
                         ({"num_executors": 2, "tf_args": dict(args, num_gpus=-1)},
                          "tf_args.num_gpus"),
                         ({"num_executors": 2, "tf_args": dict(args, lock=threading.Lock())},
                          "tf_args=.*can be pickled"),
                         ({"num_executors": 2, "map_fun": "record_ctx"}, "map_fun=")]:
        call = dict({"map_fun": record_ctx, "tf_args": args}, **kwargs)
        with pytest.raises(InvalidArgumentError, match=name):
            TFParallel.run(shared_sc, **call)
    assert records(tmp_path) == []


# shared_sc only so that the leak check leaves the module's context running
def test_local_rank_and_gpu_share_follow_tfos(shared_sc):
    nodes = ["10.0.0.1:4000", "10.0.0.10:4000", "10.0.0.1:4001", "10.0.0.1:4002"]
    assert [TFParallel.local_rank(i, nodes) for i in range(4)] == [0, 0, 1, 2]
    assert TFParallel.local_rank(3, []) == 3  # not a barrier stage: the copy's number
    assert TFParallel.gpu_indices(1, 2, 4) == [2]
    assert TFParallel.gpu_indices(2, 1, 4) == [2, 3]
    assert TFParallel.gpu_indices(1, 5, 4) == [1]  # more copies than GPUs: shared
    assert TFParallel.gpu_indices(1, 0, 0) == [] and TFParallel.gpu_indices(0, 0, 4) == []


def test_tfos_mnist_inference_example(shared_sc, tmp_path):
    """The example as a program: a model exported on the driver, inference by
    TFParallel on a context of its own (the shared one only keeps running)."""
    env = dict(os.environ, HOME=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                       "tfos_mnist_inference.py"),
                          "--cluster-mode", "local-cluster", "--work_dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "predictions: 1000 for 1000 rows in 2 part files" in out.stdout, out.stdout
    accuracy = float(out.stdout.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.9, out.stdout

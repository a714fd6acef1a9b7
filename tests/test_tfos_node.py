"""TFoS's node side on real Spark (local-cluster[2,1,1024]): ``ctx`` as map_funs see
it, a map_fun's failure in the error of the Spark action feeding it, and compat
with real TensorFlow."""

import json
import os
import sys
import tempfile

import numpy as np
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca.cluster import TFCluster, compat
from sparkorca.cluster.driver import _train_action
from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError

pytestmark = pytest.mark.engine

# map_funs below travel by value: executors cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPARK = TFCluster.InputMode.SPARK

# Everything TFoS's TFNodeContext has.
TFOS_ATTRIBUTES = ["executor_id", "worker_num", "job_name", "task_index", "cluster_spec",
                   "num_workers", "defaultFS", "working_dir", "mgr", "tmp_socket",
                   "absolute_path", "get_data_feed", "release_port", "export_saved_model",
                   "start_cluster_server"]


# No Spark here; it takes the shared context only so as not to stop the one the
# TensorFlow modules before it kept up (its Python workers have TensorFlow imported).
def test_compat_export_saved_model_serves_and_a_non_chief_leaves_nothing(shared_sc, tmp_path,
                                                                         monkeypatch):
    import tensorflow as tf
    # TF in pytest's own process writes autograph sources to its temp dir and removes
    # them at exit only: here, the test's own dir (the leak check looks at /tmp)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    compat.export_saved_model(model, str(tmp_path / "export"), is_chief=True)
    loaded = tf.saved_model.load(str(tmp_path / "export"), tags=["serve"])
    served = loaded.signatures["serving_default"](tf.constant(x))
    np.testing.assert_allclose(next(iter(served.values())).numpy(), model(x).numpy(), rtol=1e-5)

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.chdir(tmp_path)
    written = []
    real_save = compat._save

    def save_and_look(model, path):
        real_save(model, path)
        written.append(os.path.exists(os.path.join(path, "saved_model.pb")))
    monkeypatch.setattr(compat, "_save", save_and_look)
    compat.export_saved_model(model, str(tmp_path / "not-mine"), is_chief=False)
    assert written == [True]  # a non-chief saves too (MultiWorkerMirroredStrategy needs it)
    assert not list(scratch.iterdir())  # ... and its copy is gone
    assert sorted(p.name for p in tmp_path.iterdir()
                  if not p.name.startswith("__autograph")) == ["export", "scratch"]

    options = tf.data.Options()
    compat.disable_auto_shard(options)
    assert options.experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.OFF
    assert compat.is_gpu_available() is (len(tf.config.list_physical_devices("GPU")) > 0)
    for call, name in [(lambda: compat.export_saved_model(model, None), "export_dir"),
                       (lambda: compat.export_saved_model(model, "/m", "yes"), "is_chief"),
                       (lambda: compat.disable_auto_shard({}), "options")]:
        with pytest.raises(InvalidArgumentError, match=name):
            call()


shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


@pytest.fixture
def sc(shared_sc):
    return shared_sc


def context_main(out, ctx):
    """Record what a node's ctx holds, before and after release_port()."""
    import socket
    held = ctx.tmp_socket
    port = held.getsockname()[1] if isinstance(held, socket.socket) else None
    ctx.release_port()
    free = socket.socket()
    free.bind(("", port))  # the port is this node's to bind now
    free.close()
    try:
        ctx.start_cluster_server()
        tf1 = "no error"
    except Exception as e:  # noqa: BLE001 -- the message is what the test reads
        tf1 = str(e)
    record = {
        "missing": [a for a in TFOS_ATTRIBUTES if not hasattr(ctx, a)],
        "socket_before": isinstance(held, socket.socket), "port": port,
        "ctx_port": ctx.port, "socket_after": ctx.tmp_socket,
        "tf_config": json.loads(os.environ["TF_CONFIG"]),
        "executor_id": ctx.executor_id, "worker_num": ctx.worker_num,
        "job_name": ctx.job_name, "task_index": ctx.task_index,
        "cluster_spec": ctx.cluster_spec, "num_workers": ctx.num_workers,
        "defaultFS": ctx.defaultFS, "working_dir": ctx.working_dir,
        "mgr": type(ctx.mgr).__name__, "feed": type(ctx.get_data_feed()).__name__,
        "model_path": ctx.absolute_path("model"), "tf1": tf1}
    with open(os.path.join(out, f"ctx-{ctx.worker_num}.json"), "w") as f:
        json.dump(record, f)


def test_ctx_has_every_tfos_attribute_and_holds_its_port_until_release(sc, tmp_path):
    cluster = TFCluster.run(sc, context_main, str(tmp_path), num_executors=2,
                            input_mode=SPARK, master_node="chief", release_port=False)
    cluster.shutdown()
    records = [json.loads((tmp_path / f"ctx-{n}.json").read_text()) for n in (0, 1)]
    spec = {"chief": [f"{n['host']}:{n['port']}" for n in cluster.cluster_info
                      if n["job_name"] == "chief"],
            "worker": [f"{n['host']}:{n['port']}" for n in cluster.cluster_info
                       if n["job_name"] == "worker"]}
    for n, r in enumerate(records):
        assert r["missing"] == []
        assert r["socket_before"] and r["socket_after"] is None
        assert r["port"] == r["ctx_port"]  # the socket held the node's TF port
        me = r["tf_config"]["task"]
        assert r["tf_config"]["cluster"][me["type"]][me["index"]].endswith(f":{r['port']}")
        assert (r["executor_id"], r["worker_num"]) == (n, n)
        assert (r["job_name"], r["task_index"]) == (me["type"], me["index"])
        assert r["cluster_spec"] == spec and r["num_workers"] == 2
        assert (r["defaultFS"], r["working_dir"]) == (cluster.defaultFS, os.getcwd())
        assert r["model_path"] == f"{cluster.defaultFS}{os.getcwd()}/model"
        assert (r["mgr"], r["feed"]) == ("FeedHub", "DataFeed")
        assert "TF_CONFIG" in r["tf1"] and "tf.distribute" in r["tf1"]
    assert {r["job_name"] for r in records} == {"chief", "worker"}


def boom_main(args, ctx):
    feed = ctx.get_data_feed(train_mode=False)
    feed.next_batch(1)
    raise ValueError("boom-marker")


def test_a_map_fun_failure_is_in_the_error_of_the_spark_action_feeding_it(sc):
    cluster = TFCluster.run(sc, boom_main, None, num_executors=2, input_mode=SPARK)
    rdd = sc.parallelize([(i, float(i)) for i in range(10)], 2)
    with pytest.raises(Exception) as e:  # noqa: B017 -- Spark's own error type wraps ours
        cluster.inference(rdd).collect()  # no driver watches this action: its tasks say why
    text = str(e.value)
    assert "its map_fun failed" in text and "not running" not in text, text
    assert 'raise ValueError("boom-marker")' in text and "ValueError: boom-marker" in text
    # a train() feeding task says the same (the driver reports it first, from the node)
    with pytest.raises(Exception) as e:  # noqa: B017
        _train_action(rdd, cluster._feed_cfg("input", 30, 1))()
    assert "its map_fun failed" in str(e.value) and "ValueError: boom-marker" in str(e.value)
    with pytest.raises(OrcaRuntimeError, match="boom-marker"):
        cluster.train(rdd)
    # shutdown reports the failure, and stops every node (the leak check follows)
    with pytest.raises(OrcaRuntimeError, match="(?s)map_fun failed on .*ValueError: boom-marker"):
        cluster.shutdown()

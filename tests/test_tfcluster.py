"""TFCluster on real Spark (local-cluster[2,1,1024]) with real TensorFlow and PyTorch."""

import json
import os
import signal
import sys
import time

import numpy as np
import psutil
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca import OrcaContext, init_orca_context
from sparkorca._wait import wait_for
from sparkorca.cluster import TFCluster, TFNode
from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError, StartupTimeoutError

pytestmark = pytest.mark.engine

# map_funs below travel by value: executors cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPARK = TFCluster.InputMode.SPARK


# One Spark application for the module's tests (the leak check still runs after each).
shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


@pytest.fixture
def sc(shared_sc):
    return shared_sc


@pytest.fixture
def own_sc():
    """A context of the test's own, for a test that damages it (kills an executor)."""
    return init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                             conf=QUIET)


def digits_frame(spark_sc, rows=slice(0, 1500), partitions=2):
    from pyspark.sql import SparkSession
    x, y = digits()
    data = [(x[i].tolist(), int(y[i])) for i in range(1797)][rows]
    spark = SparkSession.builder.getOrCreate()
    return spark.createDataFrame(data, "features array<float>, label long").repartition(partitions)


def read_all(ctx):
    """Everything train() feeds this node, through the numpy fast path."""
    feed = ctx.get_data_feed(train_mode=True)
    xs, ys = [], []
    while True:
        cols = feed.next_batch_numpy(256)
        if cols is None:
            break  # train() has fed everything
        xs.append(cols["features"])
        ys.append(cols["label"])
    return feed, np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def digits():
    """scikit-learn's digits, scaled, in a fixed shuffled order (the file is sorted by
    writer: its tail alone would be a harder, unrepresentative holdout)."""
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return (x[order] / 16.0).astype(np.float32), y[order]


def holdout():
    x, y = digits()
    return x[1500:], y[1500:]


def keras_main(args, ctx):
    """A Keras model under MultiWorkerMirroredStrategy, trained by a custom loop:
    Keras 3's Model.fit does not run under MWMS (keras-team/keras#20585)."""
    import tensorflow as tf
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    feed, x, y = read_all(ctx)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2000, seed=ctx.task_index) \
        .repeat().batch(32)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    batches = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
    with strategy.scope():
        model = tf.keras.Sequential([tf.keras.Input((64,)),
                                     tf.keras.layers.Dense(64, activation="relu"),
                                     tf.keras.layers.Dense(10)])
        optimizer = tf.keras.optimizers.Adam(0.01)
    global_batch = 32 * strategy.num_replicas_in_sync

    @tf.function
    def step(inputs):
        def replica_step(bx, by):
            with tf.GradientTape() as tape:
                per_row = tf.keras.losses.sparse_categorical_crossentropy(
                    by, model(bx, training=True), from_logits=True)
                loss = tf.nn.compute_average_loss(per_row, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(replica_step, args=inputs), axis=None)

    for _ in range(400):  # the same number of steps on every worker
        step(next(batches))
    if ctx.job_name == "chief":
        hx, hy = holdout()
        accuracy = float((model(hx).numpy().argmax(axis=1) == hy).mean())
        with open(os.path.join(args["out"], "result.json"), "w") as f:
            json.dump({"accuracy": accuracy, "rows": int(len(x)),
                       "replicas": strategy.num_replicas_in_sync,
                       "tf_config": json.loads(os.environ["TF_CONFIG"])}, f)
    while not feed.should_stop():  # hold on until shutdown ends the feed
        feed.next_batch(1)


# First: it needs a context of its own, before the module's shared one starts.
def test_executor_loss_fails_train_with_a_clear_error(own_sc):
    sc = own_sc
    cluster = TFCluster.run(sc, memory_main, "/nonexistent", num_executors=2, input_mode=SPARK)
    victim = cluster.cluster_info[1]
    node = psutil.Process(victim["pid"])
    find_executor_jvm(victim["executor_id"]).send_signal(signal.SIGKILL)
    psutil.wait_procs([node], timeout=30)
    assert not node.is_running()  # the node died with its executor
    with pytest.raises(OrcaRuntimeError, match="node 1 .* was lost"):
        cluster.train(sc.parallelize(range(1000), 4))
    with pytest.raises(OrcaRuntimeError, match="was lost"):
        cluster.shutdown()


def test_keras_multiworker_mirrored_trains_digits_from_a_dataframe(sc, tmp_path):
    df = digits_frame(sc)
    cluster = TFCluster.run(sc, keras_main, {"out": str(tmp_path)}, num_executors=2,
                            input_mode=SPARK, master_node="chief")
    cluster.train(df, num_epochs=1)
    cluster.shutdown()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["tf_config"]["task"] == {"type": "chief", "index": 0}
    assert set(result["tf_config"]["cluster"]) == {"chief", "worker"}
    assert result["replicas"] == 2
    assert 0 < result["rows"] < 1500  # the chief got its share, not everything
    assert result["accuracy"] >= 0.9, result


def torch_main(args, ctx):
    import torch
    import torch.distributed as dist
    torch.manual_seed(0)
    dist.init_process_group("gloo")  # MASTER_ADDR/PORT, RANK, WORLD_SIZE from sparkorca
    feed, x, y = read_all(ctx)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    gen = torch.Generator().manual_seed(dist.get_rank())
    for _ in range(400):  # the same number of steps on every rank
        idx = torch.randint(0, len(xt), (32,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    if dist.get_rank() == 0:
        hx, hy = holdout()
        with torch.no_grad():
            pred = model(torch.from_numpy(hx)).argmax(dim=1).numpy()
        with open(os.path.join(args["out"], "result.json"), "w") as f:
            json.dump({"accuracy": float((pred == hy).mean()),
                       "world": dist.get_world_size(), "rows": int(len(x))}, f)
    dist.destroy_process_group()
    feed.terminate()


def test_torch_ddp_trains_digits_from_a_dataframe(sc, tmp_path):
    df = digits_frame(sc)
    cluster = TFCluster.run(sc, torch_main, {"out": str(tmp_path)}, num_executors=2,
                            input_mode=SPARK)
    cluster.train(df, num_epochs=1)
    cluster.shutdown()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world"] == 2 and 0 < result["rows"] < 1500
    assert result["accuracy"] >= 0.9, result


def doubling_main(args, ctx):
    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(37)
        if batch:
            feed.batch_results([(row[0] * 2, ctx.worker_num) for row in batch])


def test_inference_returns_one_result_per_row_in_order(sc):
    from pyspark.sql import SparkSession
    cluster = TFCluster.run(sc, doubling_main, None, num_executors=2, input_mode=SPARK)
    rdd = sc.parallelize([(i, np.ones(3)) for i in range(3000)], 5)
    out = cluster.inference(rdd)  # lazy: nothing fed until an action
    results = out.collect()
    assert [r[0] for r in results] == [2 * i for i in range(3000)]
    assert {r[1] for r in results} == {0, 1}  # both nodes answered
    df = SparkSession.builder.getOrCreate().range(0, 500, numPartitions=3)
    assert [r[0] for r in cluster.inference(df).collect()] == [2 * i for i in range(500)]
    cluster.shutdown()


def ps_main(args, ctx):
    import tensorflow as tf
    if ctx.job_name == "ps":
        server = tf.distribute.Server(ctx.cluster_spec, job_name="ps", task_index=ctx.task_index,
                                      protocol="grpc")
        server.join()  # until shutdown stops this node
    # this process is the cluster's worker:0 (the default "localhost" client job would
    # leave worker:0 unserved, and TF would wait for it)
    tf.config.experimental_connect_to_cluster(
        tf.distribute.cluster_resolver.TFConfigClusterResolver(),
        job_name=ctx.job_name, task_index=ctx.task_index)
    with tf.device("/job:ps/task:0"):
        v = tf.Variable(40.0)
        v.assign_add(2.0)
    with open(os.path.join(args["out"], "ps.json"), "w") as f:
        json.dump({"value": float(v.numpy()), "device": v.device}, f)


def test_input_mode_tensorflow_with_a_ps_node(sc, tmp_path):
    cluster = TFCluster.run(sc, ps_main, {"out": str(tmp_path)}, num_executors=2, num_ps=1,
                            input_mode=TFCluster.InputMode.TENSORFLOW)
    assert [n["job_name"] for n in cluster.cluster_info] == ["ps", "worker"]
    cluster.shutdown(timeout=240)  # waits for the worker, then stops the ps node
    result = json.loads((tmp_path / "ps.json").read_text())
    assert result["value"] == 42.0 and "/job:ps/" in result["device"]


def rows_main(args, ctx):
    """Record every batch next_batch hands out, in the TFoS row formats."""
    feed = TFNode.DataFeed(ctx.mgr, input_mapping=args.get("mapping"))
    seen = []
    while not feed.should_stop():
        batch = feed.next_batch(args["batch"])
        size = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
        if size:
            first = next(iter(batch.values()))[0] if isinstance(batch, dict) else batch[0]
            seen.append({"size": size, "first": repr(first)})
        with open(os.path.join(args["out"], f"seen-{ctx.worker_num}.json"), "w") as f:
            json.dump(seen, f)


def _seen(tmp_path):
    out = []
    for p in tmp_path.glob("seen-*.json"):
        out += json.loads(p.read_text())
    return out


def test_last_partial_batch_arrives_when_train_ends_not_at_shutdown(sc, tmp_path):
    cluster = TFCluster.run(sc, rows_main, {"out": str(tmp_path), "batch": 1000},
                            num_executors=2, input_mode=SPARK)
    rows = [(np.arange(2, dtype=np.float32) + i, i) for i in range(250)]
    cluster.train(sc.parallelize(rows, 2))
    # 250 rows, batches of 1000: both nodes' partial batches, before any shutdown
    wait_for(lambda: sum(s["size"] for s in _seen(tmp_path)) == 250, 30,
             "the partial batches of 250 rows to reach the nodes")
    assert any("array([" in s["first"] for s in _seen(tmp_path))  # rows keep numpy arrays
    cluster.shutdown()


def test_dataframe_rows_with_input_mapping(sc, tmp_path):
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    df = spark.createDataFrame([(float(i), i % 3) for i in range(100)], "x double, y long")
    cluster = TFCluster.run(sc, rows_main, {"out": str(tmp_path), "batch": 10,
                                            "mapping": {"x": "input_x", "y": "input_y"}},
                            num_executors=2, input_mode=SPARK)
    cluster.train(df.coalesce(1))
    cluster.shutdown()
    seen = _seen(tmp_path)
    assert sum(s["size"] for s in seen) == 100 and all(s["size"] == 10 for s in seen)


def failing_main(args, ctx):
    feed = ctx.get_data_feed()
    feed.next_batch(10)
    if ctx.worker_num == 1:
        raise ValueError("bad things on purpose in node 1")
    while not feed.should_stop():
        feed.next_batch(10)


def test_an_exception_in_map_fun_fails_train_and_shutdown_with_its_traceback(sc):
    cluster = TFCluster.run(sc, failing_main, None, num_executors=2, input_mode=SPARK)
    with pytest.raises(OrcaRuntimeError) as e:
        cluster.train(sc.parallelize(range(100000), 8), num_epochs=3)
    assert "bad things on purpose in node 1" in str(e.value)
    assert "Traceback" in str(e.value) and "node 1" in str(e.value)
    with pytest.raises(OrcaRuntimeError, match="bad things on purpose"):
        cluster.shutdown()


def stalled_main(args, ctx):
    feed = ctx.get_data_feed()
    feed.next_batch(1)
    while True:  # stops reading, never returns
        time.sleep(1)


def test_a_consumer_that_stops_reading_fails_the_feed_after_feed_timeout(sc):
    cluster = TFCluster.run(sc, stalled_main, None, num_executors=2, input_mode=SPARK)
    big = sc.parallelize(range(2), 2).flatMap(lambda _: (np.zeros(4096) for _ in range(2000)))
    with pytest.raises(OrcaRuntimeError) as e:
        cluster.train(big, feed_timeout=3)
    text = str(e.value)
    assert "feed_timeout=3s" in text and "TFCluster node" in text and "executor" in text
    # Spark's retries of the failed task were refused at once, not after 3 s more each
    assert "it has taken nothing for" in text, text
    # the map_fun never returns: shutdown(timeout=...) ends the stuck cluster
    with pytest.raises(StartupTimeoutError, match="timeout=5s"):
        cluster.shutdown(timeout=5)


def blocked_main(args, ctx):
    while True:  # a node that never finishes on its own
        time.sleep(1)


def test_reservation_timeout_names_the_nodes_that_never_registered(sc):
    OrcaContext.barrier_mode = False
    hog = TFCluster.run(sc, blocked_main, None, num_executors=1)  # holds one executor
    with pytest.raises(StartupTimeoutError) as e:
        TFCluster.run(sc, blocked_main, None, num_executors=2, reservation_timeout=5)
    text = str(e.value)
    assert "reservation_timeout=5s" in text and "1 of 2 node(s) never registered" in text
    assert "1 of the 2 node task(s) Spark was asked to run have started" in text, text
    with pytest.raises(StartupTimeoutError):
        hog.shutdown(timeout=1)


def test_bad_arguments_fail_before_anything_starts(sc):
    before = {p.pid for p in psutil.process_iter()}
    for kwargs, name in [({"num_executors": 3}, "num_executors"),  # 2 task slots
                         ({"num_executors": 2, "input_mode": 5}, "input_mode"),
                         ({"num_executors": 2, "reservation_timeout": 0}, "reservation_timeout"),
                         ({"num_executors": 2, "num_ps": 2}, "num_executors")]:
        with pytest.raises(InvalidArgumentError, match=name):
            TFCluster.run(sc, blocked_main, None, **kwargs)
    started = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before]
    assert not [p for p in started if "sparkorca.cluster.node" in " ".join(p.info["cmdline"] or [])]
    cluster = TFCluster.run(sc, doubling_main, None, num_executors=2, input_mode=SPARK)
    for epochs in (0, -1, 1.5):
        with pytest.raises(InvalidArgumentError, match="num_epochs"):
            cluster.train(sc.parallelize(range(10)), num_epochs=epochs)
    with pytest.raises(InvalidArgumentError, match="qname"):
        cluster.train(sc.parallelize(range(10)), qname="nope")
    cluster.shutdown()


def find_executor_jvm(exec_id):
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "--executor-id" in cmd and cmd[cmd.index("--executor-id") + 1] == exec_id:
            return p
    raise AssertionError(f"no JVM of executor {exec_id}")


def test_terminate_stops_feeding_promptly(sc, tmp_path):
    def main(args, ctx):
        feed = ctx.get_data_feed()
        got = len(feed.next_batch(100))
        feed.terminate()
        with open(os.path.join(args, f"got-{ctx.worker_num}"), "w") as f:
            f.write(str(got))
    cluster = TFCluster.run(sc, main, str(tmp_path), num_executors=2, input_mode=SPARK)
    cluster.train(sc.parallelize(range(400000), 40), num_epochs=5)
    assert sum(int(p.read_text()) for p in tmp_path.glob("got-*")) == 200
    # at most the two partitions in flight were read; the other 38 were skipped unread
    assert cluster.fed_rows <= 2 * 10000
    cluster.shutdown()


def memory_main(args, ctx):
    feed = ctx.get_data_feed()
    rows = 0
    while True:
        batch = feed.next_batch_arrow(4096)
        if batch is None:
            break
        rows += batch.num_rows
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(os.path.join(args, f"mem-{ctx.worker_num}.json"), "w") as f:
        json.dump({"rows": rows, "peak_mb": peak_kb / 1024}, f)
    feed.terminate()


def test_train_data_store_disk_keeps_a_fraction_of_what_dram_keeps(sc, tmp_path):
    # 2 x 100,000 rows of 1 KiB: ~100 MB of first epoch per node, replayed twice
    data = sc.parallelize(range(2), 2).flatMap(
        lambda _: (np.zeros(256, dtype=np.float32) for _ in range(100000)))
    peaks = {}
    for store in ("DRAM", "DISK_4"):
        OrcaContext.train_data_store = store
        out = tmp_path / store
        out.mkdir()
        cluster = TFCluster.run(sc, memory_main, str(out), num_executors=2, input_mode=SPARK)
        cluster.train(data, num_epochs=3)
        cluster.shutdown()
        results = [json.loads(p.read_text()) for p in out.glob("mem-*.json")]
        assert sum(r["rows"] for r in results) == 3 * 200000
        peaks[store] = max(r["peak_mb"] for r in results)
    print("peak RSS of a node, MB:", peaks)
    # DRAM holds the node's whole first epoch (~100 MB); DISK_4 about a quarter of it
    assert peaks["DRAM"] - peaks["DISK_4"] > 40, peaks


def test_tensorboard_runs_on_the_chief_and_stops_with_the_cluster(sc, tmp_path):
    import urllib.request

    def answers(url):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    cluster = TFCluster.run(sc, doubling_main, None, num_executors=2, input_mode=SPARK,
                            master_node="chief", tensorboard=True, log_dir=str(tmp_path))
    url = cluster.tensorboard_url()
    chief = next(n for n in cluster.cluster_info if n["job_name"] == "chief")
    root = f"http://{chief['host']}:{chief['tb_port']}/"
    assert url.startswith(root) and len(url) > len(root) + 20  # served under a secret path
    assert answers(url)  # it serves once run() returns
    assert not answers(root)  # and nothing without the secret path
    cluster.shutdown()
    assert not answers(url)


def creator_main(out, ctx):
    with ctx.data_creator_lock():  # e.g. download a dataset once per machine
        start = time.monotonic()
        time.sleep(1)  # the data creator's work (user code), not a synchronisation
        end = time.monotonic()
    with open(os.path.join(out, f"creator-{ctx.worker_num}.json"), "w") as f:
        json.dump([start, end], f)


def test_serialize_data_creator_makes_nodes_take_turns(sc, tmp_path):
    OrcaContext.serialize_data_creator = True
    cluster = TFCluster.run(sc, creator_main, str(tmp_path), num_executors=2)
    cluster.shutdown(timeout=120)
    (a0, a1), (b0, b1) = sorted(json.loads(p.read_text()) for p in tmp_path.glob("creator-*"))
    assert b0 >= a1  # one after the other, never at once


def where_main(out, ctx):
    if ctx.job_name == "ps":
        while True:  # a ps serves until shutdown stops it
            time.sleep(1)
    with open(os.path.join(out, "where.json"), "w") as f:
        json.dump({n["job_name"]: n["executor_id"] for n in ctx.cluster_info}, f)


def test_driver_ps_nodes_run_the_ps_on_the_driver(sc, tmp_path):
    cluster = TFCluster.run(sc, where_main, str(tmp_path), num_executors=2, num_ps=1,
                            driver_ps_nodes=True)
    ps = psutil.Process(cluster.cluster_info[0]["pid"])
    assert os.getpid() in [p.pid for p in ps.parents()]  # a child of this driver
    cluster.shutdown(timeout=120)
    where = json.loads((tmp_path / "where.json").read_text())
    assert where["ps"] == "driver" and where["worker"] != "driver"
    assert not ps.is_running()

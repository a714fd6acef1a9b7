"""cluster_mode="spark-connect": a real Spark Connect server (the pyspark package's
own jars, local-cluster[2,1,1024] behind it, token auth, bound to 127.0.0.1) and
sparkorca programs as its clients, each in a process of its own (a Connect client
switches pyspark into Connect mode for its whole process)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest
from conftest import QUIET

from sparkorca._wait import wait_for
from sparkorca.spark.connect_server import LocalConnectServer

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def connect_server():
    server = LocalConnectServer("local-cluster[2,1,1024]", conf=QUIET).start()
    yield server
    server.stop()


def client(server, body: str, tmp_path, timeout: float = 300, **popen):
    """``body`` as a program of its own against ``server``; its result is the JSON
    it prints last."""
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(f"""\
        import json, os, sys, time
        from sparkorca import OrcaContext, init_orca_context, stop_orca_context
        REMOTE = {server.remote!r}
        """) + textwrap.dedent(body))
    env = {**os.environ, **server.client_env()}
    if popen:
        return subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True, **popen)
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, timeout=timeout,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sql_runs_through_the_session_and_there_is_no_spark_context(connect_server, tmp_path):
    got = client(connect_server, """
        from sparkorca.errors import NoContextError
        spark = init_orca_context(cluster_mode="spark-connect", master=REMOTE)
        out = {"type": type(spark).__module__,
               "same": OrcaContext.get_spark_session() is spark,
               "sum": spark.sql("SELECT sum(id) AS s FROM range(100)").collect()[0].s}
        try:
            OrcaContext.get_spark_context()
        except NoContextError as e:
            out["no_sc"] = str(e)
        from sparkorca.data.pandas import read_csv
        try:  # RDD-based APIs name what to use instead
            read_csv("x.csv")
        except NoContextError as e:
            out["no_shards"] = str(e)
        from sparkorca.cluster import dfutil
        try:
            dfutil.loadTFRecords(None, "x")
        except NoContextError as e:
            out["no_dfutil"] = str(e)
        import torch
        from sparkorca.learn.pytorch import Estimator
        est = Estimator.from_torch(model=lambda c: torch.nn.Linear(1, 2),
                                   optimizer=lambda m, c: torch.optim.SGD(m.parameters(), 0.1),
                                   loss=torch.nn.CrossEntropyLoss())  # backend="spark"
        try:
            est.fit(spark.sql("SELECT array(1.0) AS x, 1 AS y"), feature_cols=["x"],
                    label_cols=["y"])
        except NoContextError as e:
            out["no_spark_backend"] = str(e)
        stop_orca_context()
        os.environ["SPARK_REMOTE"] = REMOTE  # the mode and the master from the environment
        spark = init_orca_context()
        out["from_env"] = spark.range(7).count()
        stop_orca_context()
        print(json.dumps(out))
        """, tmp_path)
    assert got["type"].startswith("pyspark.sql.connect") and got["same"]
    assert got["sum"] == 4950 and got["from_env"] == 7
    assert "cluster_mode='spark-connect'" in got["no_sc"]
    assert "get_spark_session" in got["no_sc"]
    assert "spark_df_to_ray_dataset" in got["no_shards"] and ".read" in got["no_shards"]
    assert "spark-connect" in got["no_dfutil"]
    assert "backend='ray'" in got["no_spark_backend"]


def test_the_server_sparkorca_starts_refuses_a_client_without_its_token(connect_server):
    env = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_AUTHENTICATE_TOKEN"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""\
        from pyspark.sql import SparkSession
        SparkSession.builder.remote({connect_server.remote!r}).getOrCreate().range(1).count()
        """)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "UNAUTHENTICATED" in out.stderr or "Invalid authentication" in out.stderr, \
        out.stderr[-2000:]
    server = psutil.Process(connect_server.pids()[0])
    for p in [server, *server.children(recursive=True)]:  # the token is never on a command line
        try:
            cmdline = " ".join(p.cmdline())
        except psutil.NoSuchProcess:  # an earlier test's Python worker, exiting meanwhile
            continue
        assert connect_server.token not in cmdline


def count_rows(args, ctx):
    """A TFCluster node's map_fun: counts what the feed gives it."""
    import json
    import os
    feed = ctx.get_data_feed()
    rows = total = 0
    while not feed.should_stop():
        batch = feed.next_batch(16)
        rows += len(batch)
        total += sum(r[0] for r in batch)
    with open(os.path.join(args["out"], f"node-{ctx.worker_num}.json"), "w") as f:
        json.dump({"rows": rows, "total": total}, f)


def test_ray_on_spark_tfcluster_to_ray_dataset_and_an_estimator_over_connect(connect_server,
                                                                            tmp_path):
    got = client(connect_server, """
        import ray
        from pyspark import cloudpickle
        import client_fns
        cloudpickle.register_pickle_by_value(client_fns)
        t = time.time()
        spark = init_orca_context(cluster_mode="spark-connect", master=REMOTE,
                                  init_ray_on_spark=True)
        out = {"start_s": time.time() - t}
        ray_ctx = OrcaContext.get_ray_context()
        out["raylets"] = sorted(r["executor_id"] for r in ray_ctx._backend.raylets)
        out["nodes"] = len([n for n in ray.nodes() if n["Alive"]])

        @ray.remote
        def square(x):
            return x * x

        def udf(batches):  # a Spark task on the server joins Ray through its raylet
            import pyarrow as pa
            import ray
            import sparkorca.ray
            sparkorca.ray.connect()
            for b in batches:
                xs = b.column("id").to_pylist()
                yield pa.RecordBatch.from_pydict({"y": ray.get([square.remote(x) for x in xs])})
        out["udf"] = sorted(r.y for r in spark.range(6, numPartitions=2)
                            .mapInArrow(udf, "y long").collect())

        from sparkorca.data import spark_df_to_ray_dataset
        ds = spark_df_to_ray_dataset(spark.range(0, 100, numPartitions=4))
        out["to_ray"] = [r["id"] for r in ds.take_all()]

        from sparkorca.cluster import InputMode, TFCluster
        cluster = TFCluster.run(spark, client_fns.count_rows, {"out": os.getcwd()}, 2,
                                input_mode=InputMode.SPARK)
        cluster.train(spark.range(0, 1000, numPartitions=4), num_epochs=2)
        cluster.shutdown()
        out["tf_nodes"] = [json.load(open(f"node-{i}.json")) for i in range(2)]

        # the Estimators' ray backend: fit, evaluate and predict of a Connect DataFrame
        import random
        import torch
        from sparkorca.learn.metrics import Accuracy
        from sparkorca.learn.pytorch import Estimator
        random.seed(0)
        xs = [[random.random() for _ in range(4)] for _ in range(400)]
        df = spark.createDataFrame([(i, x, int(x[0] > 0.5)) for i, x in enumerate(xs)],
                                   "i long, features array<double>, label long")
        est = Estimator.from_torch(model=client_fns.model_creator,
                                   optimizer=client_fns.optimizer_creator,
                                   loss=torch.nn.CrossEntropyLoss(), metrics=[Accuracy()],
                                   backend="ray")
        out["fit"] = [s["num_samples"] for s in est.fit(df, epochs=2, batch_size=32,
                                                        feature_cols=["features"],
                                                        label_cols=["label"])]
        out["evaluate"] = est.evaluate(df, feature_cols=["features"], label_cols=["label"])
        pred = est.predict(df, feature_cols=["features"])
        out["pred_type"] = type(pred).__module__
        rows = pred.collect()
        out["pred_ids"] = [r.i for r in rows]
        out["pred_hits"] = sum(int(r.prediction[1] > r.prediction[0]) == r.label for r in rows)
        est.shutdown()
        t = time.time()
        stop_orca_context()
        out["stop_s"] = time.time() - t
        print(json.dumps(out))
        """, tmp_path_with_fns(tmp_path))
    assert got["raylets"] == ["0", "1"] and got["nodes"] == 3  # the head on the client
    assert got["udf"] == [0, 1, 4, 9, 16, 25]
    assert got["to_ray"] == list(range(100))  # every row, in partition order
    nodes = got["tf_nodes"]
    assert sum(n["rows"] for n in nodes) == 2000  # two epochs of 1000 rows
    assert sum(n["total"] for n in nodes) == 2 * sum(range(1000))
    assert got["fit"] == [400, 400]  # every row, every epoch
    assert got["evaluate"]["num_samples"] == 400 and got["evaluate"]["Accuracy"] >= 0.8
    assert got["pred_type"].startswith("pyspark.sql.connect")  # the input's kind
    assert got["pred_ids"] == list(range(400))  # one prediction per row, in order
    assert got["pred_hits"] == round(got["evaluate"]["Accuracy"] * 400)
    print(f"over Connect: start {got['start_s']:.1f}s, stop {got['stop_s']:.1f}s")


def model_creator(config):
    import torch
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))


def optimizer_creator(model, config):
    import torch
    return torch.optim.Adam(model.parameters(), lr=0.02)


def tmp_path_with_fns(tmp_path):
    """tmp_path holding this module's map_fun and creators as an importable module of
    the client."""
    import inspect
    (tmp_path / "client_fns.py").write_text("\n\n".join(
        inspect.getsource(f) for f in (count_rows, model_creator, optimizer_creator)))
    return tmp_path


def ray_processes(cluster_id: str) -> list:
    """Every process of the Ray cluster ``cluster_id`` (its runners set its id)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("SPARKORCA_RAY_CLUSTER") == cluster_id:
                found.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_killed_client_leaves_no_ray_process_on_the_servers_executors(connect_server,
                                                                        tmp_path):
    proc = client(connect_server, """
        spark = init_orca_context(cluster_mode="spark-connect", master=REMOTE,
                                  init_ray_on_spark=True)
        backend = OrcaContext.get_ray_context()._backend
        print(json.dumps({"cluster": backend.cluster_id,
                          "runners": [r["runner_pid"] for r in backend.raylets]}), flush=True)
        sys.stdin.read()  # until killed
        """, tmp_path, stdin=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line, "the client exited before its Ray cluster was up"
        started = json.loads(line)
        assert len(started["runners"]) == 2 and all(map(psutil.pid_exists, started["runners"]))
        assert ray_processes(started["cluster"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not ray_processes(started["cluster"]), 30,
                 "the Ray processes of the killed client's cluster to exit",
                 tail=lambda: str(ray_processes(started["cluster"])))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stdin.close()
    # the server outlives its client and still serves the next one
    assert client(connect_server, """
        spark = init_orca_context(cluster_mode="spark-connect", master=REMOTE)
        print(json.dumps(spark.range(3).count()))
        stop_orca_context()
        """, tmp_path) == 3

"""sparkorca.cluster.pipeline (TensorFlowOnSpark's TFEstimator / TFModel) on real
Spark (local-cluster[2,1,1024]) with real TensorFlow."""

import json
import os
import sys

import numpy as np
import psutil
import pytest
from conftest import QUIET, shared_context, spark_submit_example
from pyspark import cloudpickle

from sparkorca.cluster import InputMode
from sparkorca.cluster.pipeline import TFEstimator, TFModel
from sparkorca.errors import InvalidArgumentError

pytestmark = pytest.mark.engine

# train_fns below travel by value: executors cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


@pytest.fixture
def sc(shared_sc):
    return shared_sc


def spark():
    from pyspark.sql import SparkSession
    return SparkSession.builder.getOrCreate()


def example_module():
    """examples/tfos_mnist_pipeline.py imported (its program runs under __main__ only)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "tfos_mnist_pipeline", os.path.join(ROOT, "examples", "tfos_mnist_pipeline.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example(shared_sc, tmp_path_factory):
    """The module's one TensorFlow fit: the example program, run as TFoS programs run
    (spark-submit; local[2] keeps it cheap), leaves its Keras SavedModel behind. The
    shared context the modules before kept up stays up meanwhile (idle)."""
    tmp = tmp_path_factory.mktemp("example")
    out = spark_submit_example("tfos_mnist_pipeline.py", tmp, "local[2]", "--cluster_size", 2,
                               "--export_dir", tmp / "export")
    return out, str(tmp / "export")


def test_the_example_program_fits_and_transforms_under_spark_submit(shared_sc, example):
    out, export = example
    assert out.returncode == 0, out.stderr[-4000:]
    assert "predictions: 1797 for 1797 rows" in out.stdout, out.stdout[-2000:]
    accuracy = float(out.stdout.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.8, out.stdout[-2000:]  # chance is 0.1
    assert os.path.exists(os.path.join(export, "saved_model.pb"))


def on_executor(sc, fn, *args):
    """``fn(*args)`` in a Spark task: TensorFlow loads in a Python worker (the transforms
    need it there anyway), not in this test process. The autograph sources TF writes
    there go to a dir removed after (the worker ends with os._exit, not TF's atexit)."""
    def call(_):
        from sparkorca.node.host import scratch_tempdir
        with scratch_tempdir("sparkorca-test-"):
            return fn(*args)
    return sc.parallelize([0], 1).map(call).collect()[0]


def call_saved_model(export, images):
    import tensorflow as tf
    fn = tf.saved_model.load(export).signatures["serving_default"]
    return fn(image=tf.constant(images))["output_0"].numpy()


def test_transform_of_a_keras_export_gives_every_row_its_own_prediction_in_order(sc, example):
    out, export = example
    assert out.returncode == 0, out.stderr[-4000:]
    x, y = example_module().digits()
    df = spark().createDataFrame([(x[i].tolist(), int(y[i])) for i in range(len(y))],
                                 "image array<int>, label long")
    model = TFModel({}).setExportDir(export).setInputMapping({"image": "image"}) \
        .setOutputMapping({"output_0": "probabilities"}).setBatchSize(64)
    preds = model.transform(df)
    assert preds.schema.simpleString() == "struct<probabilities:array<float>>"
    got = np.array([r.probabilities for r in preds.collect()], np.float32)
    rows = df.collect()  # the same rows, in the same order
    assert got.shape == (1797, 10)
    accuracy = float((got.argmax(axis=1) == np.array([r.label for r in rows])).mean())
    assert accuracy >= 0.8, accuracy
    # each row's output is the SavedModel's for that row's pixels: the flat 64 ints
    # were cast to float32 and reshaped to the (8, 8, 1) input
    images = np.array([r.image for r in rows], np.float32).reshape(-1, 8, 8, 1)
    np.testing.assert_allclose(got, on_executor(sc, call_saved_model, export, images), atol=1e-5)


def count_fn(args, ctx):
    """Reads what fit() feeds, by tensor name, and reports it with its args."""
    feed = ctx.get_data_feed(input_mapping=args.input_mapping)
    rows, total, keys = 0, 0, set()
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size)
        keys |= set(batch)
        rows += len(batch["v"])
        total += sum(batch["v"])
    with open(os.path.join(args.out, f"node-{ctx.worker_num}.json"), "w") as f:
        json.dump({"rows": rows, "total": total, "keys": sorted(keys), "epochs": args.epochs,
                   "batch_size": args.batch_size, "lr": args.lr, "export_dir": args.export_dir,
                   "input_mapping": args.input_mapping, "job": ctx.job_name}, f)


def test_fit_feeds_the_mapped_columns_epochs_times_and_copies_params_to_the_model(sc, tmp_path):
    df = spark().range(0, 1000, numPartitions=4).selectExpr("id AS value", "id % 3 AS unused")
    model = TFEstimator(count_fn, {"out": str(tmp_path), "lr": 0.1, "batch_size": 5}) \
        .setInputMapping({"value": "v"}).setClusterSize(2).setEpochs(2).setBatchSize(64) \
        .setExportDir("/somewhere/export").setGraceSecs(0).fit(df)
    nodes = sorted((json.loads(p.read_text()) for p in tmp_path.glob("node-*.json")),
                   key=lambda n: n["job"])
    assert [n["job"] for n in nodes] == ["chief", "worker"]
    assert sum(n["rows"] for n in nodes) == 2 * 1000  # every row, twice
    assert sum(n["total"] for n in nodes) == 2 * sum(range(1000))
    assert all(n["rows"] > 0 for n in nodes)  # both nodes were fed
    # args = tf_args merged with the params, the params winning
    assert nodes[0]["keys"] == ["v"] and nodes[0]["lr"] == 0.1 and nodes[0]["epochs"] == 2
    assert nodes[0]["batch_size"] == 64 and nodes[0]["input_mapping"] == {"value": "v"}
    assert nodes[0]["export_dir"] == "/somewhere/export"
    assert isinstance(model, TFModel)
    assert model.getExportDir() == "/somewhere/export" and model.getBatchSize() == 64
    assert model.getInputMapping() == {"value": "v"} and model.getOutputMapping() == {}
    assert model.args.batch_size == 5  # the model keeps the unmerged tf_args


def save_counter(path):
    """A tf.saved_model.save model that counts its calls: a freshly loaded copy starts
    at 1, so the outputs tell how often each Python worker loaded it."""
    import tensorflow as tf

    class Counter(tf.Module):
        def __init__(self):
            self.calls = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="x")])
        def serve(self, x):
            n = self.calls.assign_add(1)
            pair = tf.stack([tf.cast(x, tf.float64), -tf.cast(x, tf.float64)], axis=1)
            return {"y": x * 2, "calls": tf.fill(tf.shape(x), n), "pair": pair}
    module = Counter()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="module")
def counter_export(shared_sc, tmp_path_factory):
    return on_executor(shared_sc, save_counter, str(tmp_path_factory.mktemp("counter") / "export"))


def test_a_saved_model_is_loaded_once_per_python_worker_across_partitions_and_calls(
        sc, counter_export):
    df = spark().range(0, 1200, numPartitions=8).withColumnRenamed("id", "n")
    model = TFModel({}).setExportDir(counter_export).setTagSet("serve") \
        .setSignatureDefKey("serving_default").setInputMapping({"n": "x"}) \
        .setOutputMapping({"y": "doubled", "calls": "calls", "pair": "pair"}).setBatchSize(50)
    out = model.transform(df)
    # columns ordered by signature output name; int64 -> long, [batch, 2] -> array<double>
    assert out.schema.simpleString() == "struct<calls:bigint,pair:array<double>,doubled:bigint>"
    rows = out.collect()
    assert [r.doubled for r in rows] == [2 * i for i in range(1200)]  # every row, in order
    assert rows[7].pair == [7.0, -7.0]
    # 8 partitions x 150 rows, 50 per call: 24 calls. Each load answers its first
    # call (50 rows) with calls == 1; a load per partition would give 8 loads
    calls = np.array([r.calls for r in rows])
    loads = int((calls == 1).sum()) // 50
    assert 1 <= loads <= 2, loads  # one per executor's Python worker
    assert calls.max() * loads >= 24  # each worker's counter ran on across its partitions
    # a later transform() finds the models loaded: only a worker that had no partition
    # the first time may load one now
    again = np.array([r.calls for r in model.transform(df).collect()])
    assert loads + int((again == 1).sum()) // 50 <= 2
    assert again.max() > 24 // loads


def fails_before_any_job(sc, call, *fragments):
    group = "pipeline-bad-input"
    sc.setJobGroup(group, "bad input must not start a job")
    try:
        with pytest.raises(InvalidArgumentError) as e:
            call()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert sc.statusTracker().getJobIdsForGroup(group) == []
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_bad_input_fails_before_any_spark_job(sc, counter_export, tmp_path):
    df = spark().range(0, 10).withColumnRenamed("id", "n")

    def model(**changes):
        params = dict(export_dir=counter_export, input_mapping={"n": "x"},
                      output_mapping={"y": "out"})
        params.update(changes)
        m = TFModel({})
        for name, value in params.items():
            m._set(**{name: value})
        return m
    fails_before_any_job(sc, lambda: model(input_mapping={"img": "x"}).transform(df),
                         "input_mapping", "'img'", "['n']")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    fails_before_any_job(sc, lambda: model(export_dir=str(empty)).transform(df),
                         "export_dir", str(empty), "saved_model.pb")
    fails_before_any_job(sc, lambda: model(export_dir=None).transform(df), "export_dir")
    fails_before_any_job(sc, lambda: model(output_mapping={"logits": "c"}).transform(df),
                         "output_mapping", "'logits'", "['calls', 'pair', 'y']")
    fails_before_any_job(sc, lambda: model(signature_def_key="predict").transform(df),
                         "signature_def_key='predict'", "serving_default")
    fails_before_any_job(sc, lambda: model(tag_set="gpu").transform(df), "tag_set='gpu'",
                         "'serve'")
    fails_before_any_job(sc, lambda: model(input_mapping={"n": "z"}).transform(df),
                         "input_mapping", "'z'", "['x']")
    fails_before_any_job(sc, lambda: model(batch_size=0).transform(df), "batch_size=0")
    before = {p.pid for p in psutil.process_iter()}
    estimator = TFEstimator(count_fn, {}).setClusterSize(2)
    fails_before_any_job(sc, lambda: estimator.setInputMapping({"pixels": "x"}).fit(df),
                         "input_mapping", "'pixels'", "['n']")
    fails_before_any_job(sc, lambda: estimator.setInputMapping({"n": "x"}).setEpochs(0).fit(df),
                         "epochs=0")
    started = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in before]
    assert not [p for p in started if "sparkorca.cluster.node" in " ".join(p.info["cmdline"] or [])]


def own_data_fn(args, ctx):
    """InputMode.TENSORFLOW: nothing is fed; the node reports what it was given."""
    with open(os.path.join(args.out, f"node-{ctx.worker_num}.json"), "w") as f:
        json.dump({"input_mode": args.input_mode, "steps": args.steps, "job": ctx.job_name,
                   "fed": ctx.mgr is not None}, f)


def test_input_mode_tensorflow_runs_train_fn_without_feeding(sc, tmp_path):
    df = spark().range(0, 10)
    model = TFEstimator(own_data_fn, {"out": str(tmp_path)}).setClusterSize(2) \
        .setInputMode(InputMode.TENSORFLOW).setSteps(7).setGraceSecs(0).fit(df)
    assert isinstance(model, TFModel)
    nodes = sorted((json.loads(p.read_text()) for p in tmp_path.glob("node-*.json")),
                   key=lambda n: n["job"])
    assert nodes == [{"input_mode": 0, "steps": 7, "job": "chief", "fed": False},
                     {"input_mode": 0, "steps": 7, "job": "worker", "fed": False}]

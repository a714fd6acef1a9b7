"""SavedModel inference over a Spark DataFrame, three ways, in one run.

    python bench/tfmodel.py [--rows 1000000] [--batch-size 10000] [--tfos-rows 100000]

``--rows`` x 32 float32 features (one ``array<float>`` column, cached), a Keras MLP
32-64-64-10 exported once with ``model.export``, on local-cluster[2,1,1024]; each
pass ends in Spark's ``noop`` sink, so every row is computed and nothing is collected:

1. the practical limit: a hand-written ``mapInPandas`` that loads the SavedModel
   once per Python worker and calls its signature on ``--batch-size`` rows at a time;
2. sparkorca ``TFModel.transform`` with ``setBatchSize(--batch-size)``;
3. TensorFlowOnSpark 2.2.5's TFModel approach, re-created here (its package no
   longer installs on this stack): ``df.rdd.mapPartitions`` over pyspark Rows,
   ``yield_batch`` into Python lists, one signature call per batch, the outputs back
   as Python tuples and ``spark.createDataFrame(rdd.map(Row), cols)`` with schema
   inference. It is far slower, so it runs on ``--tfos-rows`` rows and its rate is
   extrapolated (a rate is a rate).

Each contender runs in a fresh Python process and makes two passes: the first
("cold") includes each Python worker importing TensorFlow and loading the model,
the second ("warm") finds them loaded. Prints rows/s for each and the ratios.
"""

import argparse
import tempfile
import textwrap

from _contender import run_contender

COLS = 32

EXPORT = """
    import numpy as np, keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32,), name="features"),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.export({export!r}, verbose=False)
    print("RESULT {{}}")
"""

COMMON = """
    import json, sys, time, types
    ROWS, BATCH, EXPORT = {rows}, {batch}, {export!r}
    from sparkorca import init_orca_context, stop_orca_context
    from pyspark.sql import SparkSession
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                      conf={{"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}})
    spark = SparkSession.builder.getOrCreate()
    def gen(batches):
        import numpy as np, pyarrow as pa
        for b in batches:
            for start in b.column(0).to_pylist():
                n = min(50000, ROWS - start)
                x = np.random.default_rng(start).normal(size=(n * {cols},)).astype(np.float32)
                yield pa.RecordBatch.from_arrays(
                    [pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * {cols}),
                                              pa.array(x))], names=["features"])
    df = spark.range(0, ROWS, 50000, numPartitions=8).toDF("start") \\
        .mapInArrow(gen, "features array<float>").cache()
    assert df.count() == ROWS
    def cached_signature():
        # a module outlives the task: Spark reuses its Python workers
        cache = sys.modules.setdefault("bench_model_cache", types.ModuleType("bench_model_cache"))
        if not hasattr(cache, "fn"):
            import tensorflow as tf
            cache.model = tf.saved_model.load(EXPORT, tags=["serve"])
            cache.fn = cache.model.signatures["serving_default"]
        return cache.fn
    def timed(make):
        seconds = []
        for _ in range(2):
            t0 = time.monotonic()
            make().write.format("noop").mode("overwrite").save()
            seconds.append(time.monotonic() - t0)
        return seconds
"""

LIMIT = """
    def predict(pdfs):
        import numpy as np, pandas as pd
        fn = cached_signature()
        for pdf in pdfs:
            x = np.stack(pdf["features"].to_numpy())
            for s in range(0, len(x), BATCH):
                out = fn(features=x[s:s + BATCH])["output_0"].numpy()
                yield pd.DataFrame({{"prediction": list(out)}})
    seconds = timed(lambda: df.mapInPandas(predict, "prediction array<float>"))
    stop_orca_context()
    print("RESULT " + json.dumps({{"rows": ROWS, "seconds": seconds}}))
"""

SPARKORCA = """
    from sparkorca.cluster.pipeline import TFModel
    model = TFModel({{}}).setExportDir(EXPORT).setTagSet("serve") \\
        .setSignatureDefKey("serving_default").setInputMapping({{"features": "features"}}) \\
        .setOutputMapping({{"output_0": "prediction"}}).setBatchSize(BATCH)
    seconds = timed(lambda: model.transform(df))
    stop_orca_context()
    print("RESULT " + json.dumps({{"rows": ROWS, "seconds": seconds}}))
"""

TFOS = """
    from pyspark.sql import Row
    def yield_batch(iterable, batch_size, num_tensors=1):
        tensors = [[] for _ in range(num_tensors)]
        for item in iterable:
            if item is None:
                break
            for i in range(num_tensors):
                tmp = str(item[i]) if type(item[i]) is bytearray else item[i]
                tensors[i].append(tmp)
            if len(tensors[0]) >= batch_size:
                yield tensors
                tensors = [[] for _ in range(num_tensors)]
        if len(tensors[0]) > 0:
            yield tensors
    def run_model(iterator):
        import tensorflow as tf
        fn = cached_signature()
        t = fn.structured_input_signature[1]["features"]  # TFoS read fn.inputs: same dtype
        result = []
        for tensors in yield_batch(iterator, BATCH, 1):
            tensor = tf.constant(tensors[0], dtype=t.dtype)
            outputs = {{k: v for k, v in fn(features=tensor).items() if k in ["output_0"]}}
            result.extend(zip(*[v.numpy().tolist() for v in outputs.values()]))
        return result
    def tfos_transform():
        rdd_out = df.select("features").rdd.mapPartitions(run_model)
        return spark.createDataFrame(rdd_out.map(lambda x: Row(*x)), ["prediction"])
    seconds = timed(tfos_transform)
    stop_orca_context()
    print("RESULT " + json.dumps({{"rows": ROWS, "seconds": seconds}}))
"""


def run(body, rows, batch, export, timeout=1800):
    code = textwrap.dedent(COMMON.format(rows=rows, batch=batch, export=export, cols=COLS)) + \
        textwrap.dedent(body.format())
    return run_contender(code, timeout=timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=10_000)
    ap.add_argument("--tfos-rows", type=int, default=100_000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="tfmodel-bench-") as tmp:
        export = f"{tmp}/export"
        run_contender(textwrap.dedent(EXPORT.format(export=export)))
        results = {
            "mapInPandas, model per worker (limit)": run(LIMIT, args.rows, args.batch_size, export),
            "sparkorca TFModel.transform": run(SPARKORCA, args.rows, args.batch_size, export),
            f"TFoS-style TFModel ({args.tfos_rows:,} rows)": run(TFOS, args.tfos_rows,
                                                                 args.batch_size, export)}
    rates = {}
    for name, r in results.items():
        cold, warm = (r["rows"] / s for s in r["seconds"])
        rates[name] = (cold, warm)
        print(f"{name:42s} {r['rows']:>9,d} rows: cold {r['seconds'][0]:6.2f} s "
              f"{cold:>10,.0f} rows/s, warm {r['seconds'][1]:6.2f} s {warm:>10,.0f} rows/s")
    names = list(rates)
    limit, ours, tfos = (rates[n] for n in names)
    print(f"sparkorca / limit: cold {ours[0] / limit[0]:.2f}x, warm {ours[1] / limit[1]:.2f}x "
          "(target >= 0.9x)")
    print(f"sparkorca / TFoS-style: cold {ours[0] / tfos[0]:.1f}x, warm {ours[1] / tfos[1]:.1f}x "
          f"(TFoS-style rate measured on {args.tfos_rows:,} rows, extrapolated)")


if __name__ == "__main__":
    main()

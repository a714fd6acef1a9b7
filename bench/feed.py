"""InputMode.SPARK feed throughput, three ways, in one run, on local-cluster[2,1,1024].

    python bench/feed.py [--rows 2000000] [--tfos-python /path/to/venv/bin/python]
                         [--tfos-rows 100000]

1. Spark's own limit: ``mapInArrow`` over the cached DataFrame (32 float32 columns)
   that only counts the bytes it is handed;
2. sparkorca: ``TFCluster.train(df)`` into two nodes whose map_fun only counts
   (``DataFeed.next_batch_arrow``); the nodes' peak RSS is printed;
3. TensorFlowOnSpark 2.2.5, where it is installed in a separate throw-away env
   (``--tfos-python``; it needs tensorflow, six and setuptools<81): the same rows
   through ``TFCluster.train(df.rdd)`` and ``DataFeed.next_batch``. It is ~100x
   slower, so it feeds ``--tfos-rows`` rows (a rate is a rate).

Make the TFoS env with:
    python3 -m venv /tmp/tfos && /tmp/tfos/bin/pip install tensorflowonspark==2.2.5 \\
        tensorflow-cpu six 'setuptools<81' pyspark==<the same pyspark>

Each contender runs in a fresh Python process. Prints rows/s, MB/s and the ratios.
"""

import argparse
import os
import sys
import textwrap

from _contender import run_contender

MASTER = "local-cluster[2,1,1024]"
COLS = 32

COMMON = """
    import json, os, sys, time
    ROWS, MASTER, COLS = {rows}, {master!r}, {cols}
    def make_frame(spark):
        from pyspark.sql import functions as F
        df = spark.range(ROWS, numPartitions=8).select(
            *[(F.rand(i) * 100).cast("float").alias(f"c{{i}}") for i in range(COLS)])
        df = df.cache()
        df.count()
        return df
"""

LIMIT = """
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master(MASTER).config("spark.ui.enabled", "false")
             .config("spark.executor.memory", "1g").getOrCreate())
    df = make_frame(spark)
    def count(batches):
        import pyarrow as pa
        n = b = 0
        for batch in batches:
            n += batch.num_rows
            b += batch.nbytes
        yield pa.RecordBatch.from_pydict({{"rows": [n], "bytes": [b]}})
    t0 = time.monotonic()
    out = df.mapInArrow(count, "rows long, bytes long").collect()
    seconds = time.monotonic() - t0
    spark.stop()
    print("RESULT " + json.dumps({{"rows": sum(r.rows for r in out),
                                  "bytes": sum(r.bytes for r in out), "seconds": seconds}}))
"""

SPARKORCA = """
    import tempfile
    from sparkorca import init_orca_context, stop_orca_context
    from sparkorca.cluster import TFCluster
    from pyspark.sql import SparkSession
    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf={{"spark.ui.enabled": "false",
                                  "spark.ui.showConsoleProgress": "false"}})
    df = make_frame(SparkSession.builder.getOrCreate())
    out = tempfile.mkdtemp(prefix="feed-bench-")
    def main(args, ctx):
        feed = ctx.get_data_feed()
        rows = nbytes = 0
        while True:
            batch = feed.next_batch_arrow(10000)
            if batch is None:
                break
            rows += batch.num_rows
            nbytes += batch.nbytes
        with open("/proc/self/status") as f:
            peak = next(int(x.split()[1]) for x in f if x.startswith("VmHWM:"))
        with open(os.path.join(args, f"node-{{ctx.worker_num}}.json"), "w") as f:
            json.dump({{"rows": rows, "bytes": nbytes, "peak_mb": peak / 1024}}, f)
        feed.terminate()
    cluster = TFCluster.run(sc, main, out, num_executors=2,
                            input_mode=TFCluster.InputMode.SPARK)
    t0 = time.monotonic()
    cluster.train(df)
    seconds = time.monotonic() - t0
    cluster.shutdown()
    stop_orca_context()
    nodes = [json.load(open(os.path.join(out, f))) for f in sorted(os.listdir(out))]
    print("RESULT " + json.dumps({{"rows": sum(n["rows"] for n in nodes),
                                  "bytes": sum(n["bytes"] for n in nodes), "seconds": seconds,
                                  "peak_mb": [round(n["peak_mb"]) for n in nodes]}}))
"""

TFOS = """
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession
    from tensorflowonspark import TFCluster, TFNode
    sc = SparkContext(conf=SparkConf().setMaster(MASTER).setAppName("tfos-feed")
                      .set("spark.ui.enabled", "false").set("spark.executor.memory", "1g"))
    df = make_frame(SparkSession.builder.getOrCreate())
    def main(args, ctx):
        feed = TFNode.DataFeed(ctx.mgr)
        rows = 0
        while not feed.should_stop():
            rows += len(feed.next_batch(1000))
        print("TFOS-NODE", rows)
    cluster = TFCluster.run(sc, main, {{}}, 2, 0, input_mode=TFCluster.InputMode.SPARK)
    t0 = time.monotonic()
    cluster.train(df.rdd, num_epochs=1)
    seconds = time.monotonic() - t0
    cluster.shutdown()
    sc.stop()
    print("RESULT " + json.dumps({{"rows": ROWS, "bytes": ROWS * COLS * 4,
                                  "seconds": seconds}}))
"""


def run(python, body, rows, timeout=1800):
    code = textwrap.dedent(COMMON.format(rows=rows, master=MASTER, cols=COLS)) + \
        textwrap.dedent(body.format())
    return run_contender(code, python, timeout)


def rate(r):
    return r["rows"] / r["seconds"], r["bytes"] / r["seconds"] / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--tfos-python", default=None)
    ap.add_argument("--tfos-rows", type=int, default=100_000)
    args = ap.parse_args()

    results = {"spark mapInArrow (limit)": run(sys.executable, LIMIT, args.rows),
               "sparkorca TFCluster.train": run(sys.executable, SPARKORCA, args.rows)}
    if args.tfos_python and os.path.exists(args.tfos_python):
        results["TensorFlowOnSpark 2.2.5"] = run(args.tfos_python, TFOS, args.tfos_rows)
    else:
        print("TensorFlowOnSpark: skipped (give --tfos-python of an env that has it)")
    for name, r in results.items():
        rows_s, mb_s = rate(r)
        extra = f", node peak RSS {r['peak_mb']} MB" if "peak_mb" in r else ""
        print(f"{name:28s} {r['rows']:>9d} rows in {r['seconds']:7.2f} s: "
              f"{rows_s:>11,.0f} rows/s {mb_s:8.1f} MB/s{extra}")
    limit = rate(results["spark mapInArrow (limit)"])[0]
    ours = rate(results["sparkorca TFCluster.train"])[0]
    print(f"sparkorca / mapInArrow limit: {ours / limit:.2f}x (target >= 0.7x)")
    if "TensorFlowOnSpark 2.2.5" in results:
        tfos = rate(results["TensorFlowOnSpark 2.2.5"])[0]
        print(f"sparkorca / TensorFlowOnSpark: {ours / tfos:.1f}x (target >= 30x)")


if __name__ == "__main__":
    main()

"""Spark DataFrame -> Ray Dataset, three ways, in one run.

    python bench/to_ray.py [--rows 10000000] [--repeat 1]

A generated (not cached) DataFrame of ``--rows`` x 8 float64 columns on
local-cluster[2,1,2048]:

1. ``ray.data.from_pandas(df.toPandas())`` (local Ray, 2 CPUs);
2. ``ray.data.from_arrow(df.toArrow())`` (a driver-side Arrow collect);
3. sparkorca: ``spark_df_to_ray_dataset(df)`` with Ray on Spark: each partition
   goes from its executor into its node's object store; the driver sees refs only;
4. the floor: Spark producing the frame and handing it to Python (a mapInArrow
   that only counts), with no Ray at all: on a plain SparkSession, and on the
   Spark that sparkorca's context sets up (its executors start from class archives
   and run the same job faster). The second is what Ray adds, nothing else.

Each runs in a fresh process; seconds cover the conversion and ``ds.count()``,
from a start with both executors registered (not yet warmed by any job).
Prints the seconds, the ratios, and the driver's peak RSS (Python process and
Spark driver JVM, read from /proc before they stop).
"""

import argparse
import textwrap

from _contender import run_contender

COMMON = """
    import json, os, time
    ROWS = {rows}
    def peak_mb(pid):
        with open(f"/proc/{{pid}}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith("VmHWM:")) / 1024
    def driver_jvm():
        import psutil
        return [p.pid for p in psutil.Process().children() if p.name() == "java"][0]
    def executors_up(spark):
        # every timer starts with both executors registered, as sparkorca's does (Ray
        # on Spark waits for them): an executor's start is not part of the export
        from sparkorca.spark.session import wait_for_executors
        wait_for_executors(spark.sparkContext, 2, 120, "the timed export")
    def make_frame(spark):
        from pyspark.sql import functions as F
        return spark.range(ROWS, numPartitions=8).select(
            *[(F.rand(i) * 100).alias(f"c{{i}}") for i in range(8)])
"""

DRIVER_SIDE = """
    import ray
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local-cluster[2,1,2048]")
             .config("spark.ui.enabled", "false").config("spark.driver.memory", "4g")
             .config("spark.driver.maxResultSize", "0").getOrCreate())
    ray.init(num_cpus=2, include_dashboard=False)
    df = make_frame(spark)
    executors_up(spark)
    t0 = time.monotonic()
    if {how!r} == "pandas":
        ds = ray.data.from_pandas(df.toPandas())
    else:
        ds = ray.data.from_arrow(df.toArrow())
    n = ds.count()
    seconds = time.monotonic() - t0
    result = {{"rows": n, "seconds": seconds, "driver_mb": peak_mb(os.getpid()),
              "jvm_mb": peak_mb(driver_jvm())}}
    ray.shutdown()
    spark.stop()
    print("RESULT " + json.dumps(result))
"""

FLOOR = """
    from pyspark.sql import SparkSession
    {start}
    spark = SparkSession.builder.getOrCreate()
    df = make_frame(spark)
    def count(batches):
        import pyarrow as pa
        yield pa.RecordBatch.from_pydict({{"n": [sum(b.num_rows for b in batches)]}})
    executors_up(spark)
    t0 = time.monotonic()
    n = sum(r.n for r in df.mapInArrow(count, "n long").collect())
    seconds = time.monotonic() - t0
    result = {{"rows": n, "seconds": seconds, "driver_mb": peak_mb(os.getpid()),
              "jvm_mb": peak_mb(driver_jvm())}}
    {stop}
    print("RESULT " + json.dumps(result))
"""
# the floor on a plain SparkSession, and on the Spark sparkorca's context sets up
PLAIN_SPARK = {"start": 'SparkSession.builder.master("local-cluster[2,1,2048]")'
                        '.config("spark.ui.enabled", "false").getOrCreate()',
               "stop": "spark.stop()"}
ORCA_SPARK = {"start": "from sparkorca import init_orca_context, stop_orca_context; "
                       'init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, '
                       'memory="2g", conf={"spark.ui.enabled": "false", '
                       '"spark.ui.showConsoleProgress": "false"})',
              "stop": "stop_orca_context()"}

SPARKORCA = """
    from sparkorca import init_orca_context, stop_orca_context
    from sparkorca.data import spark_df_to_ray_dataset
    from sparkorca.spark.session import active_spark_context
    from pyspark.sql import SparkSession
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="2g",
                      init_ray_on_spark=True, object_store_memory="1500m",
                      conf={{"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}})
    df = make_frame(SparkSession.builder.getOrCreate())
    t0 = time.monotonic()
    ds = spark_df_to_ray_dataset(df)
    n = ds.count()
    seconds = time.monotonic() - t0
    result = {{"rows": n, "seconds": seconds, "driver_mb": peak_mb(os.getpid()),
              "jvm_mb": peak_mb(driver_jvm())}}
    stop_orca_context()
    print("RESULT " + json.dumps(result))
"""


def run(body, rows, **fmt):
    return run_contender(textwrap.dedent(COMMON.format(rows=rows))
                         + textwrap.dedent(body.format(**fmt)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each contender, interleaved; the fastest counts")
    args = ap.parse_args()
    contenders = {
        "from_pandas(df.toPandas())": (DRIVER_SIDE, {"how": "pandas"}),
        "from_arrow(df.toArrow())": (DRIVER_SIDE, {"how": "arrow"}),
        "sparkorca (executors -> Ray)": (SPARKORCA, {}),
        "floor: Spark export, no Ray": (FLOOR, PLAIN_SPARK),
        "floor under sparkorca's Spark": (FLOOR, ORCA_SPARK),
    }
    runs: dict = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, (body, fmt) in contenders.items():
            runs[name].append(run(body, args.rows, **fmt))
    results = {name: min(rs, key=lambda r: r["seconds"]) for name, rs in runs.items()}
    if args.repeat > 1:
        for name, rs in runs.items():
            print(f"{name:30s} runs: " + ", ".join(f"{r['seconds']:.2f}" for r in rs))
    for name, r in results.items():
        print(f"{name:30s} {r['rows']:>10d} rows {r['seconds']:7.2f} s   driver peak RSS: "
              f"python {r['driver_mb']:7.0f} MB, JVM {r['jvm_mb']:7.0f} MB")
    ours = results["sparkorca (executors -> Ray)"]["seconds"]
    for name in list(results)[:2]:
        print(f"{name} / sparkorca: {results[name]['seconds'] / ours:.2f}x (target >= 2x)")
    floor = results["floor: Spark export, no Ray"]["seconds"]
    print(f"sparkorca / floor: {ours / floor:.2f}x (target <= 1.15x)")
    same = results["floor under sparkorca's Spark"]["seconds"]
    print(f"sparkorca / floor under sparkorca's Spark: {ours / same:.2f}x "
          "(what Ray adds over the same Spark's own export)")


if __name__ == "__main__":
    main()

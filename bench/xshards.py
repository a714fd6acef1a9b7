"""Driver numpy -> Spark DataFrame: Orca's XShards way against Spark's own, in one run.

    python bench/xshards.py [--rows 1000000] [--cols 32] [--repeat 3]

A float32 array of ``--rows`` x ``--cols`` on the driver, on
local-cluster[2,1,2048]:

1. sparkorca: ``XShards.partition(arr)`` -> ``transform_shard(to a pandas
   DataFrame)`` -> ``to_spark_df()``: the array is pickled once, each executor
   receives its slice and builds its DataFrame, Arrow carries it into Spark;
2. Spark: ``spark.createDataFrame(pd.DataFrame(arr))`` (Arrow enabled, Spark 4's
   default): the driver converts the whole frame and ships it.

Each contender runs in a fresh process, warms up on a small array first, then
runs ``--repeat`` times; the seconds cover the conversion and an aggregate over
every column of the result (so every value reaches Spark). Prints each median,
and the ratio.
"""

import argparse
import statistics
import textwrap

from _contender import run_contender

COMMON = """
    import json, time
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F
    from sparkorca import OrcaContext, init_orca_context, stop_orca_context
    from sparkorca.data import XShards
    ROWS, COLS, REPEAT = {rows}, {cols}, {repeat}
    NAMES = [f"c{{i}}" for i in range(COLS)]
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="2g",
                      driver_memory="3g",
                      conf={{"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                             "spark.driver.maxResultSize": "0"}})
    spark = OrcaContext.get_spark_session()

    def to_frame(a):
        return pd.DataFrame(a, columns=NAMES)

    def check(sdf):  # every column of every row reaches Spark
        return sdf.agg(*[F.sum(c) for c in NAMES]).collect()[0][0]

    def timed(arr):
        t0 = time.monotonic()
        total = check(convert(arr))
        return time.monotonic() - t0, total
"""

SPARKORCA = """
    def convert(arr):
        return XShards.partition(arr).transform_shard(to_frame).to_spark_df()
"""

SPARK = """
    def convert(arr):
        return spark.createDataFrame(to_frame(arr))
"""

RUN = """
    rng = np.random.default_rng(0)
    timed(rng.random((10_000, COLS), dtype=np.float32))  # warm-up: JIT, Python workers
    arr = rng.random((ROWS, COLS), dtype=np.float32)
    runs = [timed(arr) for _ in range(REPEAT)]
    want = float(arr[:, 0].sum(dtype=np.float64))
    assert all(abs(total - want) / want < 1e-3 for _, total in runs), (runs, want)
    stop_orca_context()
    print("RESULT " + json.dumps([s for s, _ in runs]))
"""


def run(body, args):
    return run_contender(
        textwrap.dedent(COMMON.format(rows=args.rows, cols=args.cols, repeat=args.repeat))
        + textwrap.dedent(body) + textwrap.dedent(RUN))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    mb = args.rows * args.cols * 4 / 1e6
    results = {
        "sparkorca: partition + transform_shard + to_spark_df": run(SPARKORCA, args),
        "spark.createDataFrame(pandas)": run(SPARK, args),
    }
    print(f"{args.rows} x {args.cols} float32 ({mb:.0f} MB), median of {args.repeat}:")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(runs)
        print(f"  {name:55s} {medians[name]:6.2f} s   runs: "
              + ", ".join(f"{s:.2f}" for s in runs))
    ours, theirs = medians.values()
    print(f"createDataFrame(pandas) / sparkorca: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()

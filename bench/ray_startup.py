"""Seconds from the call to a finished first ray.get, three ways, in one run.

    python bench/ray_startup.py [--master local[2]] [--repeat 1] [--connect]

1. plain ``ray.init()`` (no Spark),
2. ``ray.util.spark.setup_ray_cluster`` + ``ray.init`` on a Spark session of the
   same master (the Spark start is reported separately and included in "total"),
3. ``init_orca_context(init_ray_on_spark=True)`` on the same master (its total
   includes starting Spark, which it does concurrently with the Ray head),
4. with --connect: ``init_orca_context(cluster_mode="spark-connect",
   init_ray_on_spark=True)`` from a thin client of a Spark Connect server (the
   same master behind it, started once before and not timed: a Connect client
   finds its server running).

Each contender runs in a fresh Python process with an empty HOME, so none sees
the ~/.ray/auth_token another one left (a plain ray.init() writes one, and
ray.util.spark then fails to start). sparkorca's runs share one cache dir: the
first start on a machine is a plain one, the second writes the JVMs' class
archives (both reported on lines of their own); the timed ones map them. Prints
each time, stop times and the ratios.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import Optional

PLAIN = """
    import time, json
    t0 = time.monotonic()
    import ray
    ray.init(num_cpus=2)
    ray.get(ray.remote(lambda: 1).remote())
    start = time.monotonic() - t0
    t1 = time.monotonic(); ray.shutdown(); stop = time.monotonic() - t1
    print(json.dumps({"start": start, "stop": stop}))
"""

RAY_UTIL_SPARK = """
    import time, json
    t0 = time.monotonic()
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master(MASTER).config("spark.ui.enabled", "false")
             .config("spark.task.cpus", "1").getOrCreate())
    spark_start = time.monotonic() - t0
    t1 = time.monotonic()
    import ray
    from ray.util.spark import setup_ray_cluster, shutdown_ray_cluster
    setup_ray_cluster(max_worker_nodes=1)  # local mode allows no per-node sizing
    ray.init()
    ray.get(ray.remote(lambda: 1).remote())
    ray_start = time.monotonic() - t1
    t2 = time.monotonic(); ray.shutdown(); shutdown_ray_cluster(); stop = time.monotonic() - t2
    spark.stop()
    print(json.dumps({"start": spark_start + ray_start, "spark_start": spark_start,
                      "ray_start": ray_start, "stop": stop}))
"""

SPARKORCA = """
    import time, json
    t0 = time.monotonic()
    import ray
    from sparkorca import init_orca_context, stop_orca_context
    init_orca_context(cluster_mode="local", master=MASTER, init_ray_on_spark=True,
                      conf={"spark.ui.enabled": "false"})
    ray.get(ray.remote(lambda: 1).remote())
    start = time.monotonic() - t0
    t1 = time.monotonic(); stop_orca_context(); stop = time.monotonic() - t1
    print(json.dumps({"start": start, "stop": stop}))
"""

SPARKORCA_ON_RUNNING_SPARK = """
    import time, json
    t0 = time.monotonic()
    import ray
    from sparkorca import init_orca_context, stop_orca_context, OrcaContext
    init_orca_context(cluster_mode="local", master=MASTER, conf={"spark.ui.enabled": "false"})
    spark_start = time.monotonic() - t0
    t1 = time.monotonic()
    OrcaContext.get_ray_context()  # Ray started on demand inside the running app
    ray.get(ray.remote(lambda: 1).remote())
    ray_start = time.monotonic() - t1
    t2 = time.monotonic(); OrcaContext.get_ray_context().stop(); stop = time.monotonic() - t2
    stop_orca_context()
    print(json.dumps({"start": spark_start + ray_start, "spark_start": spark_start,
                      "ray_start": ray_start, "stop": stop}))
"""

SPARKORCA_CONNECT = """
    import time, json
    t0 = time.monotonic()
    import ray
    from sparkorca import init_orca_context, stop_orca_context
    init_orca_context(cluster_mode="spark-connect", master=MASTER, init_ray_on_spark=True)
    ray.get(ray.remote(lambda: 1).remote())
    start = time.monotonic() - t0
    t1 = time.monotonic(); stop_orca_context(); stop = time.monotonic() - t1
    print(json.dumps({"start": start, "stop": stop}))
"""

SPARK_ONLY = """
    import time, json
    t0 = time.monotonic()
    from sparkorca import init_orca_context, stop_orca_context
    sc = init_orca_context(cluster_mode="local", master=MASTER, conf={"spark.ui.enabled": "false"})
    sc.parallelize([1]).count()
    start = time.monotonic() - t0
    stop_orca_context()
    print(json.dumps({"start": start}))
"""


def run(code: str, master: str, cache: str, env_extra: Optional[dict] = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-home-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(env_extra or {})
        env["SPARKORCA_CACHE_DIR"] = cache
        # as in an activated venv: ray.util.spark runs the `ray` script found on PATH
        env.update(HOME=home, PYSPARK_PYTHON=sys.executable, RAY_USAGE_STATS_ENABLED="0",
                   PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
        src = f"MASTER = {master!r}\n" + textwrap.dedent(code)
        out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True,
                             env=env, timeout=600)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    lines = [line for line in out.stdout.splitlines() if line.startswith('{"start"')]
    return json.loads(lines[-1]) if lines else {"error": "no result line in its output"}


def report(name: str, r: dict) -> None:
    if "error" in r:
        print(f"{name:32s} FAILED: {r['error']}")
        return
    extra = (f" (Spark {r['spark_start']:.1f}s + Ray {r['ray_start']:.1f}s)"
             if "spark_start" in r else "")
    stop = f", stop {r['stop']:.1f}s" if "stop" in r else ""
    print(f"{name:32s} start -> first ray.get {r['start']:6.1f}s{extra}{stop}")


def best_of(results: list) -> dict:
    ok = [r for r in results if "error" not in r]
    return min(ok, key=lambda r: r["start"]) if ok else results[0]


def connect_client(master: str, repeat: int, cache: str) -> dict:
    """The best of ``repeat`` Connect clients of one server of ``master``."""
    from sparkorca.spark.connect_server import LocalConnectServer
    with LocalConnectServer(master, conf={"spark.ui.enabled": "false"}) as server:
        return best_of([run(SPARKORCA_CONNECT, server.remote, cache, server.client_env())
                        for _ in range(repeat)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--connect", action="store_true",
                    help="also time a Spark Connect client (server of the same master)")
    args = ap.parse_args()
    rows = {"ray.init()": PLAIN, "ray.util.spark": RAY_UTIL_SPARK, "sparkorca": SPARKORCA,
            "sparkorca, Ray on running Spark": SPARKORCA_ON_RUNNING_SPARK,
            "spark only (sparkorca, no Ray)": SPARK_ONLY}
    best = {}
    cache = tempfile.mkdtemp(prefix="bench-cache-")
    for which, what in (("first", "plain"), ("second", "writes the JVMs' class archives")):
        r = run(SPARKORCA, args.master, cache)
        if "error" not in r:
            print(f"{'sparkorca, ' + which + ' start':32s} start -> first ray.get "
                  f"{r['start']:6.1f}s, stop {r['stop']:.1f}s   ({what}; once a machine)")
    for name, code in rows.items():
        best[name] = best_of([run(code, args.master, cache) for _ in range(args.repeat)])
        report(name, best[name])
    if args.connect:
        best["sparkorca over Connect"] = connect_client(args.master, args.repeat, cache)
        report("sparkorca over Connect", best["sparkorca over Connect"])
    def get(name, key="start"):
        return best[name].get(key)

    ours, plain, util = get("sparkorca"), get("ray.init()"), get("ray.util.spark")
    def get(name, key="start"):
        return best[name].get(key)

    ours, plain, util = get("sparkorca"), get("ray.init()"), get("ray.util.spark")
    ours_ray, util_ray = (get("sparkorca, Ray on running Spark", "ray_start"),
                          get("ray.util.spark", "ray_start"))
    spark_only = get("spark only (sparkorca, no Ray)")
    shutil.rmtree(cache, ignore_errors=True)
    print(f"\nmaster {args.master}, best of {args.repeat}")
    if ours and plain:
        target = "1.3x" if args.master.startswith("local[") else "1.5x"
        print(f"sparkorca incl. Spark start / ray.init()       = {ours / plain:5.2f}x   "
              f"(target <= {target})")
    if best["sparkorca"].get("stop") is not None:
        print(f"sparkorca stop, Spark included                 = "
              f"{best['sparkorca']['stop']:5.2f}s   (target <= 1.0s; ray.shutdown() "
              f"{best['ray.init()'].get('stop', float('nan')):.2f}s)")
    if ours and spark_only and plain:
        print(f"sparkorca Ray over Spark start / ray.init()    = "
              f"{(ours - spark_only) / plain:5.2f}x   (target <= 1.5x)")
    if ours_ray and plain:
        print(f"sparkorca Ray on running Spark / ray.init()    = {ours_ray / plain:5.2f}x")
    over_connect = best.get("sparkorca over Connect", {}).get("start")
    if over_connect and ours:
        print(f"sparkorca over Connect / sparkorca local mode  = {over_connect / ours:5.2f}x   "
              "(server already up; local mode includes its Spark start)")
    if util and ours:
        print(f"ray.util.spark / sparkorca, both incl. Spark   = {util / ours:5.2f}x   "
              "(target >= 3x)")
    if util_ray and ours_ray:
        print(f"ray.util.spark / sparkorca, Ray on running app = {util_ray / ours_ray:5.2f}x")


if __name__ == "__main__":
    main()

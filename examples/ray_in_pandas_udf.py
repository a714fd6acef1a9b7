"""Ray called from inside a Spark pandas UDF: each partition's rows are scored by
a Ray actor pool living on the Spark cluster's own machines.

    python examples/ray_in_pandas_udf.py [--cluster-mode local-cluster]
"""
import argparse

import ray

from sparkorca import OrcaContext, init_orca_context, stop_orca_context


@ray.remote
class Scorer:
    """A 'model' loaded once per actor, shared by every Spark task that calls it."""

    def __init__(self, weight):
        self.weight = weight

    def score(self, values):
        return [v * self.weight for v in values]


def score_partitions(batches):
    import sparkorca.ray
    sparkorca.ray.connect()  # join the Ray cluster from this Spark task
    scorer = ray.get_actor("scorer")
    for pdf in batches:
        pdf["score"] = ray.get(scorer.score.remote(pdf["x"].tolist()))
        yield pdf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-mode", default="local")
    args = ap.parse_args()
    init_orca_context(cluster_mode=args.cluster_mode, cores=2 if args.cluster_mode == "local"
                      else 1, num_nodes=2, memory="1g", init_ray_on_spark=True)
    try:
        scorer = Scorer.options(name="scorer", num_cpus=0).remote(3.0)  # tasks look it up
        ray.get(scorer.score.remote([0.0]))  # creation is asynchronous: wait until it is up
        spark = OrcaContext.get_spark_session()
        df = spark.range(0, 1000, numPartitions=4).selectExpr("CAST(id AS DOUBLE) AS x")
        scored = df.mapInPandas(score_partitions, schema="x double, score double")
        total = scored.selectExpr("sum(score) AS s").collect()[0]["s"]
        print(f"sum of scores computed by Ray from Spark: {total:.0f}")
    finally:
        stop_orca_context()


if __name__ == "__main__":
    main()

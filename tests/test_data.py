"""sparkorca.data on real Spark (and Ray for the hand-off), with files the tests write."""

import gc
import json
import os
import sys

import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca import OrcaContext, data, init_orca_context
from sparkorca._wait import wait_for
from sparkorca.data import local_handoff, to_ray
from sparkorca.errors import (
    InvalidArgumentError,
    MissingPathError,
    NoContextError,
    OrcaRuntimeError,
)

pytestmark = pytest.mark.engine

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Small partitions, so that the one big file is split across several of them.
CONF = {**QUIET, "spark.sql.files.maxPartitionBytes": str(256 << 10),
        "spark.sql.files.openCostInBytes": str(4 << 10)}


def frame(start, n):
    return pd.DataFrame({"id": np.arange(start, start + n),
                         "name": [f"n{i % 7}" for i in range(start, start + n)],
                         "score": np.arange(start, start + n) / 4.0})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "many").mkdir()
    for i in range(30):  # a directory of many small files
        frame(i * 20, 20).to_csv(root / "many" / f"part-{i:02d}.csv", index=False)
    (root / "many" / "_SUCCESS").write_text("")  # markers are not data
    frame(0, 30000).to_csv(root / "big.csv", index=False)  # ~0.6 MB: several 256 KB partitions
    big = frame(0, 30000)
    big.to_json(root / "big.json", orient="records", lines=True)
    (root / "pq").mkdir()
    for i in range(3):
        frame(i * 1000, 1000).to_parquet(root / "pq" / f"p{i}.parquet", index=False)
    (root / "bad.csv").write_text("id,name,score\n1,a,0.5\n2,b,1.0\n3,c,1.5,extra\n4,d,2.0\n")
    return root


def sorted_frame(df):
    return df.sort_values("id").reset_index(drop=True)


shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=CONF)


@pytest.fixture
def sc(shared_sc):
    return shared_sc


# The two tests that need no context, or one of their own, run before the shared one starts.
def test_reading_without_a_context_says_how_to_start_one(files):
    with pytest.raises(NoContextError, match="init_orca_context"):
        data.read_csv(str(files / "big.csv"))


def test_to_ray_dataset_moves_partitions_on_the_executors_and_keeps_them(files):
    import ray
    init_orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                      init_ray_on_spark=True, object_store_memory="200m",
                      conf={**CONF, "spark.python.worker.reuse": "false"})
    OrcaContext.pandas_read_backend = "spark"
    shards = data.read_csv(str(files / "big.csv"))
    ds = shards.to_ray_dataset()
    # Spark's Python workers have all exited (no reuse): the blocks live on, owned by
    # the holders, on the executors' Ray nodes and never on the driver's.
    refs = [r for bundle in ds.iter_internal_ref_bundles() for r in bundle.block_refs]
    assert len(refs) >= shards.num_partitions() > 1
    head = ray.get_runtime_context().get_node_id()
    where = ray.experimental.get_object_locations(refs)
    assert all(loc["node_ids"] and head not in loc["node_ids"] for loc in where.values())
    # One holder per executor's node, started with Ray and serving every transfer;
    # the driver's head, with no executor, has none. On Linux the tasks handed their
    # blocks over the holders' local sockets and never joined Ray: the driver is the
    # only Ray job.
    holders = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
               if a["name"].startswith("sparkorca-holder-")}
    assert len(holders) == 2 and not any(head in h for h in holders), holders
    if local_handoff.supported():
        assert len(ray_jobs()) == 1, ray_jobs()
    got = sorted_frame(ds.to_pandas())
    # Ray hands columns back with pyarrow dtypes
    pd.testing.assert_frame_equal(got.astype({"id": "int64", "name": object, "score": "float64"}),
                                  frame(0, 30000))
    # A task that cannot reach a holder's socket (none on its machine, or not Linux)
    # joins Ray and puts through it, one Ray job per Python worker (no reuse); their
    # raylets start no idle workers for these drivers.
    rdd = shards.to_arrow_rdd()

    def run_unreachable(route):
        route = route._replace(holders=tuple(h._replace(address=local_handoff.new_address())
                                             for h in route.holders))
        return rdd.mapPartitionsWithIndex(
            lambda i, it: to_ray._put_partition(route, i, it)).collect()
    through_ray = to_ray._to_ray(run_unreachable)
    assert len(ray_jobs()) > 1
    assert not idle_workers(OrcaContext.get_ray_context()._backend)
    pd.testing.assert_frame_equal(sorted_frame(through_ray.to_pandas()), got)
    del through_ray
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    spark_df = spark.range(0, 1000, numPartitions=2)
    assert sorted(data.spark_df_to_ray_dataset(spark_df).to_pandas()["id"]) == list(range(1000))
    assert {n["name"] for n in ray.util.list_named_actors(all_namespaces=True)
            if n["name"].startswith("sparkorca-holder-")} == holders  # the same two
    # The holders keep no refs: a Dataset's blocks go with the driver's last reference
    # to them, as the driver's own puts would; the other Dataset's stay. (32 MB, not
    # read before it is dropped: no other object of that size comes or goes.)
    big = spark.range(0, 2_000_000, numPartitions=2).selectExpr("id", "id * 0.5 AS x")
    again = data.spark_df_to_ray_dataset(big)
    size, held = again.size_bytes(), primary_bytes()
    assert again.count() == 2_000_000 and size >= 32_000_000 and held >= size
    del again
    gc.collect()
    wait_for(lambda: primary_bytes() <= held - size, 30,
             "the blocks of a dropped Dataset to be freed")
    assert list(sorted_frame(ds.to_pandas())["id"]) == list(range(30000))


def ray_jobs() -> list:
    """The Ray jobs (drivers) the cluster has seen, through the driver's connection."""
    import ray
    return ray._private.state.jobs()


def primary_bytes() -> int:
    """Bytes of primary copies in the Ray cluster's object stores, as its raylets
    count them (asked through the driver's own connection to the cluster)."""
    import ray
    from ray._private.internal_api import get_memory_info_reply
    return get_memory_info_reply(ray._private.state.state).store_stats \
        .object_store_bytes_primary_copy


def idle_workers(backend) -> list:
    """Ray's idle worker processes under the raylets of this cluster's executors. (The
    head's are left out: Ray Data starts its own actors there, each a ray::IDLE worker
    until its class is loaded, which on a busy machine outlasts the next Spark job.)"""
    executor_nodes = {f"--node-name={node['node_name']}" for node in backend.nodes()
                      if not node["is_head"]}
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if (p.info["cmdline"] or [""])[0] != "ray::IDLE":
            continue
        try:
            if executor_nodes.intersection(p.parent().cmdline()):
                found.append(p.info["pid"])
        except (psutil.Error, AttributeError):  # gone, or no parent
            pass
    return found


def test_both_backends_read_the_same_rows_and_columns(sc, files):
    read = {}
    for backend in ("spark", "pandas"):
        OrcaContext.pandas_read_backend = backend
        read[backend] = {
            "many csv": data.read_csv(str(files / "many")),
            "glob csv": data.read_csv(f"file://{files}/many/part-1*.csv"),
            "big csv": data.read_csv(str(files / "big.csv")),
            "list csv": data.read_csv([str(files / "many" / "part-00.csv"),
                                       str(files / "big.csv")]),
            "json": data.read_json(str(files / "big.json")),
            "parquet": data.read_parquet(str(files / "pq")),
        }
    expected = {"many csv": frame(0, 600), "glob csv": frame(200, 200), "big csv": frame(0, 30000),
                "json": frame(0, 30000), "parquet": frame(0, 3000)}
    assert read["spark"]["big csv"].num_partitions() > 1  # the big file was split
    assert read["pandas"]["many csv"].rdd.count() == 30  # one shard per file
    for name in read["spark"]:
        spark_df = sorted_frame(read["spark"][name].to_pandas())
        pandas_df = sorted_frame(read["pandas"][name].to_pandas())
        assert list(spark_df.columns) == list(pandas_df.columns) == ["id", "name", "score"]
        # the same frames, dtypes included (pandas' int64 for CSV integers both ways)
        pd.testing.assert_frame_equal(spark_df, pandas_df)
        if name in expected:
            pd.testing.assert_frame_equal(pandas_df, expected[name])
    assert len(read["pandas"]["list csv"]) == 30020


def test_shards_operations_round_trips_and_the_tfcluster_feed(sc, files, tmp_path):
    OrcaContext.pandas_read_backend = "pandas"
    OrcaContext.shard_size = 7
    shards = data.read_csv(str(files / "many"))
    sizes = [len(s) for s in shards.collect()]
    assert max(sizes) <= 7 and sum(sizes) == 600

    doubled = shards.transform_shard(lambda df, k: df.assign(score=df.score * k), 2)
    assert sorted_frame(doubled.to_pandas()).score.tolist() == (np.arange(600) / 2.0).tolist()

    again = shards.repartition(3)
    assert again.num_partitions() == 3 and len(again.collect()) == 3
    assert len(again) == 600

    by_name = shards.partition_by("name", 3).collect()
    homes = {}
    for i, shard in enumerate(by_name):
        for value in set(shard.name):
            homes.setdefault(value, set()).add(i)
    assert len(homes) == 7 and all(len(h) == 1 for h in homes.values())

    sdf = shards.to_spark_df()
    assert sdf.count() == 600 and sdf.schema.simpleString() == \
        "struct<id:bigint,name:string,score:double>"
    OrcaContext.shard_size = None
    back = data.Shards.from_spark_df(sdf)
    assert back.num_partitions() == sdf.rdd.getNumPartitions()
    pd.testing.assert_frame_equal(sorted_frame(back.to_pandas()), frame(0, 600))

    shards.save_parquet(str(tmp_path / "out"))
    assert len(list((tmp_path / "out").glob("*.parquet"))) == shards.rdd.count()
    pd.testing.assert_frame_equal(
        sorted_frame(data.read_parquet(str(tmp_path / "out")).to_pandas()), frame(0, 600))

    from sparkorca.cluster import TFCluster

    def count_rows(out, ctx):
        feed = ctx.get_data_feed()
        ids = []
        while True:
            cols = feed.next_batch_numpy(100)
            if cols is None:
                break
            ids += cols["id"].tolist()
        with open(os.path.join(out, f"ids-{ctx.worker_num}.json"), "w") as f:
            json.dump(ids, f)
        feed.terminate()
    cluster = TFCluster.run(sc, count_rows, str(tmp_path), num_executors=2,
                            input_mode=TFCluster.InputMode.SPARK)
    cluster.train(shards)  # Shards feed like an RDD
    cluster.shutdown()
    fed = sorted(i for p in tmp_path.glob("ids-*.json") for i in json.loads(p.read_text()))
    assert fed == list(range(600))


def test_bad_input_is_named(sc, files):
    with pytest.raises(MissingPathError, match="No such file or directory: '/no/such/dir'"):
        data.read_csv("/no/such/dir")
    with pytest.raises(MissingPathError, match="No data files"):
        data.read_csv(str(files / "many" / "*.parquet"))
    with pytest.raises(InvalidArgumentError, match="pandas_read_backend"):
        OrcaContext.pandas_read_backend = "dask"
    with pytest.raises(InvalidArgumentError, match="squeeze"):
        data.read_csv(str(files / "big.csv"), squeeze=True)  # pandas 2 removed it
    assert len(data.read_csv(str(files / "big.csv"), usecols=["id"]).to_pandas().columns) == 1
    OrcaContext.pandas_read_backend = "pandas"
    with pytest.raises(OrcaRuntimeError) as e:  # at the read, as Orca: the shards are eager
        data.read_csv(str(files / "bad.csv"))
    assert "bad.csv" in str(e.value) and "line 4" in str(e.value)
    assert len(data.read_csv(str(files / "big.csv"), usecols=["id"]).to_pandas().columns) == 1

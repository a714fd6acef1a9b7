"""Shards: a distributed collection of pandas DataFrames, one or more per Spark
partition (an RDD whose elements are DataFrames)."""

from __future__ import annotations

import pickle
from typing import Callable, List, Optional

from ..errors import InvalidArgumentError


def split_rows(df, shard_size: Optional[int]) -> list:
    """``df`` in pieces of ``shard_size`` rows (one piece when None)."""
    if not shard_size or len(df) <= shard_size:
        return [df]
    return [df.iloc[i:i + shard_size] for i in range(0, len(df), shard_size)]


def _concat(dfs):
    import pandas as pd
    dfs = list(dfs)
    if not dfs:
        return []
    return [pd.concat(dfs, ignore_index=True) if len(dfs) > 1 else dfs[0]]


class Shards:
    """pandas DataFrames spread over the executors.

    Examples
    --------
    >>> shards = sparkorca.data.read_csv("hdfs:///data/*.csv")
    >>> shards = shards.transform_shard(lambda df: df[df.price > 0])
    >>> df = shards.to_spark_df()
    """

    def __init__(self, rdd, shard_size: Optional[int] = None):
        self.rdd = rdd
        if shard_size:
            self.rdd = rdd.flatMap(lambda df: split_rows(df, shard_size))

    # -- basics ---------------------------------------------------------------
    def num_partitions(self) -> int:
        return self.rdd.getNumPartitions()

    def transform_shard(self, fn: Callable, *args) -> "Shards":
        """A new Shards of ``fn(shard, *args)`` for every shard (lazily)."""
        return Shards(self.rdd.map(lambda df: fn(df, *args)))

    def collect(self) -> list:
        """Every shard, in partition order, on the driver."""
        return self.rdd.collect()

    def to_pandas(self):
        """One DataFrame of every row, on the driver."""
        import pandas as pd
        shards = self.collect()
        return pd.concat(shards, ignore_index=True) if shards else pd.DataFrame()

    def __len__(self) -> int:
        return int(self.rdd.map(len).sum())

    # -- moving rows ------------------------------------------------------------
    def repartition(self, num_partitions: int) -> "Shards":
        """Spread the rows over ``num_partitions`` partitions, one shard each."""
        n = _count("num_partitions", num_partitions)

        def pieces(index, dfs):
            # cut each shard in up to n pieces; start at the source partition's
            # index so that small shards spread instead of piling on partition 0
            for df in dfs:
                step = max(1, -(-len(df) // n))
                for k, i in enumerate(range(0, len(df), step)):
                    yield (index + k) % n, df.iloc[i:i + step]
        moved = self.rdd.mapPartitionsWithIndex(pieces).partitionBy(n, lambda k: k)
        return Shards(moved.mapPartitions(lambda kv: _concat(df for _, df in kv)))

    def partition_by(self, column: str, num_partitions: Optional[int] = None) -> "Shards":
        """Put the rows that share a value of ``column`` in the same partition."""
        n = _count("num_partitions", num_partitions or self.num_partitions())

        def pieces(df):
            from pandas.util import hash_pandas_object
            if column not in df.columns:
                raise KeyError(f"partition_by: no column {column!r} in {list(df.columns)}")
            target = hash_pandas_object(df[column], index=False).to_numpy() % n
            return [(int(t), df[target == t]) for t in sorted(set(target.tolist()))]
        moved = self.rdd.flatMap(pieces).partitionBy(n, lambda k: k)
        return Shards(moved.mapPartitions(lambda kv: _concat(df for _, df in kv)))

    # -- Spark, Arrow, files, Ray -------------------------------------------------
    def to_arrow_rdd(self):
        """The rows as an RDD of ``pyarrow.RecordBatch`` (what TFCluster.train feeds)."""
        def batches(dfs):
            import pyarrow as pa
            for df in dfs:
                yield from pa.Table.from_pandas(df, preserve_index=False).to_batches()
        return self.rdd.mapPartitions(batches)

    def to_spark_df(self):
        """A Spark DataFrame of the rows, one partition per partition, through Arrow."""
        from pyspark.sql import SparkSession
        from pyspark.sql.pandas.types import from_arrow_schema
        import pyarrow as pa
        spark = SparkSession.builder.getOrCreate()
        first = self.rdd.filter(lambda df: True).take(1)
        if not first:
            raise InvalidArgumentError("shards", "empty", "at least one shard")
        schema = pa.Schema.from_pandas(first[0], preserve_index=False)
        packed = spark.createDataFrame(self.rdd.map(lambda df: (pickle.dumps(df, protocol=5),)),
                                       "shard binary")

        def unpack(batches):
            import pyarrow as pa
            for batch in batches:
                for blob in batch.column(0).to_pylist():
                    table = pa.Table.from_pandas(pickle.loads(blob), schema=schema,
                                                 preserve_index=False)
                    yield from table.to_batches()
        return packed.mapInArrow(unpack, from_arrow_schema(schema))

    @staticmethod
    def from_spark_df(df, shard_size: Optional[int] = None) -> "Shards":
        """Shards of a Spark DataFrame: each partition becomes pandas on its executor,
        through Arrow (``shard_size``: rows per shard; None: one per partition)."""
        def pack(batches):
            import pyarrow as pa
            for batch in batches:  # one pickled pandas piece per Arrow batch Spark sends
                blob = pickle.dumps(batch.to_pandas(), protocol=5)
                yield pa.RecordBatch.from_pydict({"shard": [blob]})
        empty = df.limit(0).toPandas()  # the pandas dtypes of an empty partition
        packed = df.mapInArrow(pack, "shard binary").rdd

        def merge(rows):
            frames = [pickle.loads(r.shard) for r in rows]
            return _concat(frames) if frames else [empty]
        from ..context import OrcaContext
        size = shard_size if shard_size is not None else OrcaContext.shard_size
        return Shards(packed.mapPartitions(merge), size)

    def save_parquet(self, path: str) -> None:
        """Write every shard as one Parquet file under ``path`` (any fsspec URL)."""
        def write(index, dfs):
            import fsspec
            import pyarrow as pa
            import pyarrow.parquet as pq
            fs, root = fsspec.core.url_to_fs(path)
            fs.makedirs(root, exist_ok=True)
            for i, df in enumerate(dfs):
                with fs.open(f"{root.rstrip('/')}/part-{index:05d}-{i:04d}.parquet", "wb") as f:
                    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)
            return []
        self.rdd.mapPartitionsWithIndex(write).count()

    def to_ray_dataset(self):
        """A Ray Dataset of the rows; see ``sparkorca.data.to_ray``."""
        from .to_ray import shards_to_ray_dataset
        return shards_to_ray_dataset(self)


def _count(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(name, value, "an integer >= 1")
    return value


__all__: List[str] = ["Shards"]

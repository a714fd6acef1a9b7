"""read_csv / read_json / read_parquet into Shards, with either backend of
``OrcaContext.pandas_read_backend``:

- "spark": Spark reads the files and each partition becomes pandas through Arrow.
  Spark's type inference differs from pandas': integer columns arrive as int32
  (pandas: int64), and only the pandas keyword arguments Spark has an option for
  are accepted (see ``SPARK_CSV_OPTIONS``).
- "pandas": the file list is spread over the executors and pandas reads each file
  there, with every keyword argument pandas takes; one shard per file (or per
  ``shard_size`` rows).

Both give the same rows and columns for the same files.
"""

from __future__ import annotations

from typing import Callable, Dict

from ..errors import InvalidArgumentError, NoContextError, OrcaRuntimeError
from ..spark.session import job_error_text
from .paths import expand_paths
from .shards import Shards, split_rows

# where the useful part of a failed read starts in Spark's error text
_READ_ERRORS = ("ValueError: read_", "Malformed", "AnalysisException")

# pandas keyword -> how it becomes a Spark CSV option
SPARK_CSV_OPTIONS: Dict[str, Callable] = {
    "sep": lambda v: {"sep": v},
    "delimiter": lambda v: {"sep": v},
    "header": lambda v: {"header": "true" if v in (0, "infer") else "false"},
    "quotechar": lambda v: {"quote": v},
    "escapechar": lambda v: {"escape": v},
    "comment": lambda v: {"comment": v},
    "encoding": lambda v: {"encoding": v},
    "na_values": lambda v: {"nullValue": v if isinstance(v, str) else v[0]},
}


def _spark():
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    if SparkContext._active_spark_context is None:
        raise NoContextError("sparkorca.data needs a running Spark context: call "
                             "init_orca_context(...) first (e.g. init_orca_context("
                             "cluster_mode='local', cores=2))")
    return SparkSession.builder.getOrCreate()


def _backend() -> str:
    from ..context import OrcaContext
    return OrcaContext.pandas_read_backend


def _read_with_pandas(kind: str, path, kwargs: dict) -> Shards:
    from ..context import OrcaContext
    spark = _spark()
    files = expand_paths(path, f"read_{kind}")
    shard_size = OrcaContext.shard_size
    if kind == "json":
        kwargs = {"lines": True, **kwargs}  # JSON lines, as Spark reads them

    def read(url):
        import fsspec
        import pandas as pd
        reader = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[kind]
        try:
            with fsspec.open(url, "rb") as f:
                df = reader(f, **kwargs)
        except (ValueError, pd.errors.ParserError) as e:
            raise ValueError(f"read_{kind}: {url}: {e}") from None
        return split_rows(df, shard_size)
    sc = spark.sparkContext
    slices = max(1, min(len(files), sc.defaultParallelism))
    return Shards(sc.parallelize(files, slices).flatMap(read))


def _read_with_spark(kind: str, path, kwargs: dict) -> Shards:
    spark = _spark()
    files = expand_paths(path, f"read_{kind}")
    reader = spark.read
    if kind == "csv":
        options = {"header": "true", "inferSchema": "true", "mode": "FAILFAST"}
        for key, value in kwargs.items():
            if key not in SPARK_CSV_OPTIONS:
                raise InvalidArgumentError(
                    key, value, f"one of {sorted(SPARK_CSV_OPTIONS)} with "
                    "pandas_read_backend='spark'",
                    hint="set OrcaContext.pandas_read_backend = 'pandas' to pass any "
                         "pandas.read_csv argument")
            options.update(SPARK_CSV_OPTIONS[key](value))
        df = reader.options(**options).csv(files)
    elif kind == "json":
        if kwargs:
            raise InvalidArgumentError(next(iter(kwargs)), kwargs[next(iter(kwargs))],
                                       "no pandas arguments with pandas_read_backend='spark'")
        df = reader.option("mode", "FAILFAST").json(files)
    else:
        df = reader.parquet(*files)
    return Shards.from_spark_df(df)


def _read(kind: str, path, kwargs: dict) -> Shards:
    backend = _backend()
    try:
        if backend == "pandas":
            return _read_with_pandas(kind, path, kwargs)
        return _read_with_spark(kind, path, kwargs)
    except Exception as e:  # Spark's own errors: keep only what names the file/line
        from pyspark.errors import PySparkException
        from py4j.protocol import Py4JJavaError
        if isinstance(e, (PySparkException, Py4JJavaError)):
            raise OrcaRuntimeError(f"read_{kind}({path!r}) with the {backend} backend "
                                   f"failed: {job_error_text(e, _READ_ERRORS, 2000)}") from None
        raise


def read_csv(path, **kwargs) -> Shards:
    """CSV files as Shards (``kwargs``: pandas.read_csv arguments)."""
    return _read("csv", path, kwargs)


def read_json(path, **kwargs) -> Shards:
    """JSON-lines files as Shards (``kwargs``: pandas.read_json arguments)."""
    return _read("json", path, kwargs)


def read_parquet(path, **kwargs) -> Shards:
    """Parquet files as Shards (``kwargs``: pandas.read_parquet arguments)."""
    return _read("parquet", path, kwargs)

"""read_csv / read_json / read_parquet into XShards of pandas DataFrames, with either
backend of ``OrcaContext.pandas_read_backend``; both give the same frames:

- "spark" (the default): Spark reads the files (big files are split across
  tasks) and each partition becomes one DataFrame through Arrow. The pandas
  arguments are translated into Spark reader options where they map and applied
  on each shard after reading otherwise (see ``_csv`` and ``_json``); the few
  that change how text is cut into fields (``skiprows``, ``nrows`` ...) read
  with pandas on the executors, one file per task.
- "pandas": the file list is spread over the executors and pandas reads each
  file there with every argument pandas takes; one shard per file (or per
  ``shard_size`` rows).

The read is eager, as Orca's: the shards are computed and cached at the call, so
a missing path or a malformed file fails there, with the parser's own message.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable, List, Optional

from ..errors import InvalidArgumentError, OrcaRuntimeError
from . import _csv, _json
from .paths import expand_paths
from .shards import DATAFRAME, XShards, _spark_session, split_rows

log = logging.getLogger(__name__)

# pandas.read_parquet's arguments (pandas backend) and Spark's parquet options
PANDAS_PARQUET = {"engine", "storage_options", "use_nullable_dtypes", "dtype_backend",
                  "filesystem", "filters"}
SPARK_PARQUET = {"mergeSchema", "recursiveFileLookup", "pathGlobFilter", "modifiedBefore",
                 "modifiedAfter", "datetimeRebaseMode", "int96RebaseMode"}
REMOVED_JSON = {"numpy": "pandas 2 removed it"}


def _other(backend: str) -> str:
    return "pandas" if backend == "spark" else "spark"


def _check_kwargs(kind: str, kwargs: dict, backend: str) -> None:
    """Every keyword is one pandas takes (or, with the spark backend, a Spark reader
    option Orca passed through); refused: what pandas removed, chunked reading."""
    module = _csv if kind == "csv" else _json
    accepted = module.pandas_arguments()
    removed = _csv.REMOVED if kind == "csv" else REMOVED_JSON
    for name, value in kwargs.items():
        if name in removed:
            raise InvalidArgumentError(name, value, f"nothing: pandas 2 removed "
                                       f"read_{kind}'s {name}", hint=removed[name])
        if name in module.NOT_FOR_SHARDS:
            raise InvalidArgumentError(name, value, "nothing: XShards hold whole files, not a "
                                       "reader of chunks", hint="set OrcaContext.shard_size "
                                       "to cut shards into pieces of that many rows")
        if name in module.SPARK_OPTIONS:
            if backend == "pandas":
                raise InvalidArgumentError(name, value, f"a pandas.read_{kind} argument",
                                           hint=f"{name} is a Spark reader option: it works "
                                           "with OrcaContext.pandas_read_backend = 'spark'")
            continue
        if name not in accepted:
            raise InvalidArgumentError(name, value, f"a pandas.read_{kind} argument"
                                       + (" or a Spark reader option" if backend == "spark"
                                          else ""))


def _reason(error: BaseException) -> str:
    """What the parser said, without Java's or Python's stack frames."""
    text = str(error)
    marker = "OrcaRuntimeError: "
    if marker in text:  # raised by our own reading code on an executor
        text = text[text.rindex(marker) + len(marker):]
        return text.split("\n\tat ")[0].split("\nJVM stacktrace")[0].strip()[:2000]
    lines = [line.rstrip().lstrip(": ") for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("at ")
             and not line.startswith("An error occurred while calling")
             and not re.match(r"\s*\.\.\. \d+ more", line)
             and not line.startswith(("JVM stacktrace", "  File ", "    "))]
    return "\n".join(lines[:12])[:2000]


def _failure(kind: str, backend: str, path, error: BaseException) -> OrcaRuntimeError:
    return OrcaRuntimeError(
        f"read_{kind}({path!r}) with the {backend} backend failed: {_reason(error)}\n"
        f"(the {_other(backend)} backend may read it: set OrcaContext.pandas_read_backend = "
        f"'{_other(backend)}')")


def _spark_errors():
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    return (PySparkException, Py4JJavaError)


def _guarded(kind: str, backend: str, path, build: Callable[[], XShards]) -> XShards:
    """Build the shards, then compute and cache them now (Orca's eager read)."""
    try:
        shards = build()
    except _spark_errors() as e:  # inference found a malformed file, or Spark refused it
        raise _failure(kind, backend, path, e) from None
    shards.cache()
    try:
        shards.rdd.count()
    except _spark_errors() as e:
        shards.uncache()
        raise _failure(kind, backend, path, e) from None
    return shards


def _read_file(kind: str, kwargs: dict, shard_size: Optional[int], url: str) -> list:
    """On an executor: one file, read by pandas."""
    import pandas as pd
    reader = {"csv": pd.read_csv, "json": pd.read_json, "parquet": pd.read_parquet}[kind]
    source = url[len("file://"):] if url.startswith("file://") else url
    try:
        df = reader(source, **kwargs)
    except Exception as e:  # the parser's own message, named after the file
        raise OrcaRuntimeError(f"read_{kind}: {url}: {type(e).__name__}: {e}") from None
    return split_rows(df, shard_size)


def _with_pandas(kind: str, files: List[str], kwargs: dict) -> XShards:
    from .. import context
    sc = _spark_session().sparkContext
    if kind == "json":
        kwargs = {"lines": True, **kwargs}  # JSON lines, as Spark reads them
    body = functools.partial(_read_file, kind, kwargs, context.flags().shard_size)
    slices = max(1, min(len(files), sc.defaultParallelism))
    return XShards(sc.parallelize(files, slices).flatMap(body), class_name=DATAFRAME)


def _read_text(kind: str, file_path, kwargs: dict) -> XShards:
    from .. import context
    backend = context.flags().pandas_read_backend
    spark = _spark_session()
    _check_kwargs(kind, kwargs, backend)
    files = expand_paths(file_path, f"read_{kind}", kwargs.get("storage_options"))
    if backend == "pandas":
        return _guarded(kind, backend, file_path, lambda: _with_pandas(kind, files, kwargs))
    module: Any = _csv if kind == "csv" else _json
    plan = module.plan(kwargs, files)
    if plan.fallback:
        log.info("read_%s: %s read with pandas on the executors (Spark's reader has no "
                 "equivalent)", kind, plan.fallback)
        return _guarded(kind, backend, file_path, lambda: _with_pandas(kind, files, kwargs))

    def build() -> XShards:
        sdf, post = module.spark_frame(spark, files, plan)
        return XShards.from_spark_df(sdf, post=post)
    return _guarded(kind, backend, file_path, build)


def read_csv(file_path, **kwargs) -> XShards:
    """CSV files as XShards of pandas DataFrames.

    Parameters
    ----------
    file_path : str or list of str
        A file, a directory (read recursively, without ``_SUCCESS``/``.crc``
        markers), a glob, or a list of them, on any filesystem (local, hdfs://,
        s3://, ...).
    **kwargs
        ``pandas.read_csv`` arguments; with the spark backend, also Spark's CSV
        options ``multiLine``, ``mode``, ``lineSep`` ... as Orca passed them.

    Returns
    -------
    XShards
        One DataFrame per Spark partition (spark backend) or per file (pandas
        backend), computed and cached.

    Raises
    ------
    MissingPathError
        ``file_path`` does not exist (a FileNotFoundError).
    InvalidArgumentError
        An argument pandas does not take, or took but removed (``squeeze``).
    OrcaRuntimeError
        A file could not be parsed; the parser's message says where.

    Examples
    --------
    >>> from sparkorca.data.pandas import read_csv
    >>> shards = read_csv("hdfs:///data/ratings/", usecols=["user", "item"],
    ...                   dtype={"user": "int32"})
    >>> shards = read_csv("/data/no_header.csv", header=None)   # columns 0, 1, 2 ...
    """
    return _read_text("csv", file_path, kwargs)


def read_json(file_path, **kwargs) -> XShards:
    """JSON files as XShards of pandas DataFrames: JSON lines by default (``lines=True``,
    as Spark reads JSON), or a JSON document per file with ``lines=False`` and
    ``orient``. ``kwargs``: ``pandas.read_json`` arguments (and, with the spark
    backend, Spark's JSON options). Errors as :func:`read_csv`.

    Examples
    --------
    >>> from sparkorca.data.pandas import read_json
    >>> shards = read_json("s3://bucket/events/*.json", dtype={"value": "float"})
    """
    return _read_text("json", file_path, kwargs)


def read_parquet(file_path, columns=None, schema=None, **options) -> XShards:
    """Parquet files as XShards of pandas DataFrames.

    Parameters
    ----------
    file_path : str or list of str
        As :func:`read_csv`.
    columns : str or list of str, optional
        Only these columns.
    schema : pyspark.sql.types.StructType or str, optional
        The schema to read with (spark backend), as Spark's ``DataFrameReader.schema``.
    **options
        Spark's parquet options (``mergeSchema``, ``pathGlobFilter`` ...) with the
        spark backend; ``pandas.read_parquet`` arguments (``engine``, ``filters``
        ...) with the pandas backend.

    Examples
    --------
    >>> from sparkorca.data.pandas import read_parquet
    >>> shards = read_parquet("hdfs:///warehouse/sales", columns=["id", "price"])
    """
    from .. import context
    backend = context.flags().pandas_read_backend
    spark = _spark_session()
    if isinstance(columns, str):
        columns = [columns]
    if columns is not None and (not isinstance(columns, (list, tuple)) or not columns or
                                not all(isinstance(c, str) for c in columns)):
        raise InvalidArgumentError("columns", columns, "a column name or a list of them")
    accepted, other, others = (SPARK_PARQUET, "pandas", PANDAS_PARQUET) \
        if backend == "spark" else (PANDAS_PARQUET, "spark", SPARK_PARQUET)
    for name, value in options.items():
        if name not in accepted:
            raise InvalidArgumentError(name, value, f"one of {sorted(accepted)} with "
                                       f"pandas_read_backend='{backend}'",
                                       hint=f"the {other} backend takes {sorted(others)}")
    if schema is not None:
        from pyspark.sql.types import StructType
        if backend == "pandas":
            raise InvalidArgumentError("schema", schema, "None with pandas_read_backend="
                                       "'pandas'", hint="the spark backend reads with a schema")
        if not isinstance(schema, (str, StructType)):
            raise InvalidArgumentError("schema", schema, "a StructType or a DDL string such "
                                       "as 'id BIGINT, price DOUBLE'")
    files = expand_paths(file_path, "read_parquet", options.get("storage_options"))

    def check_columns(have: List[str]) -> None:
        missing = [c for c in columns or [] if c not in have]
        if missing:
            raise InvalidArgumentError("columns", columns, f"columns of the files: {have}",
                                       hint=f"not found: {missing}")

    if backend == "pandas":
        if columns:
            check_columns(_parquet_columns(files[0], options.get("storage_options")))
        kwargs = dict(options, columns=list(columns) if columns else None)
        return _guarded("parquet", backend, file_path,
                        lambda: _with_pandas("parquet", files, kwargs))

    def build() -> XShards:
        reader = spark.read.options(**{k: _option(v) for k, v in options.items()})
        if schema is not None:
            reader = reader.schema(schema)
        sdf = reader.parquet(*files)
        if columns:
            check_columns(sdf.columns)
            sdf = sdf.select([f"`{c}`" for c in columns])
        return XShards.from_spark_df(sdf)
    return _guarded("parquet", backend, file_path, build)


def _option(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _parquet_columns(url: str, storage_options: Optional[dict]) -> List[str]:
    """The column names in one Parquet file's footer (a small read)."""
    import fsspec
    import pyarrow.parquet as pq
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        schema = pq.read_schema(f)
    return [n for n in schema.names if not n.startswith("__index_level_")]


__all__ = ["read_csv", "read_json", "read_parquet"]

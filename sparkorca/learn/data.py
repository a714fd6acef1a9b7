"""What an Estimator trains on: a Spark DataFrame, sparkorca.data Shards (pandas
frames or ``{"x": ..., "y": ...}`` dicts) or a data creator, checked on the
driver before anything starts, then carried as Arrow record batches (the TFCluster
feed, Spark's mapInArrow) and turned back into numpy arrays on the executors.

Orca's rules: several feature columns are several model inputs (``model(*xs)``),
several label columns several targets; a scalar column is an ``(n,)`` array, an
array column ``(n, k)``. Floats become float32 (the frameworks' default), integer
labels int64 (what the losses take as class indices).

Executor side: numpy and pyarrow only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from .. import _validate as check
from ..errors import InvalidArgumentError

SHAPE_KEY = b"sparkorca.shape"
DICT_FEATURES = ("x",)
DICT_LABELS = ("y",)


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which Arrow columns are the model's inputs and which its targets."""

    features: Tuple[str, ...]
    labels: Tuple[str, ...] = ()


def is_creator(data: Any) -> bool:
    """A data creator ``(config, batch_size) -> DataLoader / tf.data.Dataset``."""
    return isinstance(data, (types.FunctionType, functools.partial))


def is_ray_dataset(data: Any) -> bool:
    """A Ray Dataset (checked without importing Ray)."""
    return type(data).__module__.startswith("ray.data") and hasattr(data, "iter_batches")


def _col_list(name: str, value) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or \
            not all(isinstance(c, str) and c for c in items):
        raise InvalidArgumentError(name, value, "a column name or a non-empty list of them")
    return tuple(items)


def check_batch_size(batch_size) -> int:
    """The global batch: each of N workers takes batch_size // N."""
    return check.integer("batch_size", batch_size)


def check_epochs(epochs) -> int:
    return check.integer("epochs", epochs)


class ArrowInput:
    """Arrow record batches of an RDD: what TFCluster's feed takes (``to_arrow_rdd``)."""

    def __init__(self, rdd):
        self.rdd = rdd

    def to_arrow_rdd(self):
        return self.rdd


def columns_for(data: Any, feature_cols, label_cols, need_labels: bool,
                what: str = "data") -> Columns:
    """The columns of a DataFrame or Shards input, checked against it on the driver
    (for Shards, against the first shard's columns or keys)."""
    from pyspark.sql import DataFrame
    features = _col_list("feature_cols", feature_cols)
    labels = _col_list("label_cols", label_cols)
    if isinstance(data, DataFrame):
        have = list(data.columns)
        kind = "the DataFrame"
    elif hasattr(data, "rdd") and hasattr(data, "_first_meta"):  # sparkorca.data Shards
        meta = data._first_meta()
        if meta is None:
            raise InvalidArgumentError(what, "empty Shards", "Shards holding at least one shard")
        if meta.keys is not None:  # {"x": ..., "y": ...}
            if "x" not in meta.keys:
                raise InvalidArgumentError(what, f"dict shards with keys {meta.keys}",
                                           'dict shards {"x": ndarray(s), "y": ndarray(s)}')
            if need_labels and "y" not in meta.keys:
                raise InvalidArgumentError(what, f"dict shards with keys {meta.keys}",
                                           'shards with a "y" entry (the labels)')
            return Columns(DICT_FEATURES, DICT_LABELS if need_labels else ())
        if meta.columns is None:
            raise InvalidArgumentError(what, f"Shards of {meta.kind}",
                                       'Shards of pandas DataFrames or of {"x", "y"} dicts')
        have = [str(c) for c in meta.columns]
        kind = "the shards"
    elif is_ray_dataset(data):
        have = list(data.columns())
        kind = "the Ray Dataset"
    else:
        raise InvalidArgumentError(what, type(data).__name__,
                                   "a Spark DataFrame, sparkorca.data Shards, a Ray "
                                   "Dataset or a data creator function (config, batch_size)")
    if features is None:
        raise InvalidArgumentError("feature_cols", None,
                                   f"the feature columns of {kind}, among {have}")
    if need_labels and labels is None:
        raise InvalidArgumentError("label_cols", None,
                                   f"the label columns of {kind}, among {have}")
    for name, cols in (("feature_cols", features), ("label_cols", labels or ())):
        missing = [c for c in cols if c not in have]
        if missing:
            raise InvalidArgumentError(name, missing, f"columns of {kind}: {have}")
    return Columns(features, labels if need_labels and labels else ())


def feedable(data: Any, cols: Columns, min_partitions: int = 1):
    """``data`` as what the TFCluster feed streams: a DataFrame of just the needed
    columns, or Shards as Arrow batches."""
    from pyspark.sql import DataFrame

    from ..node.job import over_connect
    names = list(cols.features + cols.labels)
    if isinstance(data, DataFrame):
        df = data.select(*names)
        if over_connect(df):  # a Connect client cannot ask for the partition count
            return df.repartition(min_partitions) if min_partitions > 1 else df
        if df.rdd.getNumPartitions() < min_partitions:
            df = df.repartition(min_partitions)  # every worker gets data
        return df
    rdd = data.rdd
    if rdd.getNumPartitions() < min_partitions:
        rdd = rdd.repartition(min_partitions)
    return ArrowInput(rdd.mapPartitions(functools.partial(shard_batches, cols)))


def collected_batches(df) -> List[pa.RecordBatch]:
    """A (small) DataFrame's rows as non-empty Arrow batches, classic or Connect."""
    from ..node.job import over_connect
    if over_connect(df):  # Spark 3.5's Connect client has no toArrow yet
        table = df.toArrow() if hasattr(type(df), "toArrow") else df._to_table()[0]
        batches = table.to_batches()
    else:
        batches = df._collect_as_arrow()
    return [b for b in batches if b.num_rows]


# -- executor side -----------------------------------------------------------------
def _array_column(value: np.ndarray) -> Tuple[pa.Array, Optional[bytes]]:
    value = np.asarray(value)
    if value.ndim <= 1:
        return pa.array(value.reshape(-1)), None
    width = int(np.prod(value.shape[1:]))
    flat = pa.array(np.ascontiguousarray(value).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width), json.dumps(value.shape[1:]).encode()


def shard_batches(cols: Columns, shards: Iterator[Any]) -> Iterator[pa.RecordBatch]:
    """A partition's shards as Arrow record batches of the needed columns."""
    import pandas as pd
    for shard in shards:
        if isinstance(shard, pd.DataFrame):
            names = list(cols.features + cols.labels)
            table = pa.Table.from_pandas(shard[names], preserve_index=False)
            yield from table.to_batches()
            continue
        fields, arrays = [], []
        for key in cols.features + cols.labels:
            value = shard[key]
            parts = list(value) if isinstance(value, (list, tuple)) else [value]
            for i, part in enumerate(parts):
                arr, shape = _array_column(part)
                name = key if not isinstance(value, (list, tuple)) else f"{key}.{i}"
                fields.append(pa.field(name, arr.type,
                                       metadata={SHAPE_KEY: shape} if shape else None))
                arrays.append(arr)
        if arrays and len(arrays[0]):
            yield pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _expand(schema: pa.Schema, name: str) -> List[str]:
    """A column, or the parts ``name.0, name.1, ...`` a tuple of arrays was cut into."""
    if name in schema.names:
        return [name]
    parts = sorted((n for n in schema.names if n.startswith(name + ".")),
                   key=lambda n: int(n.rsplit(".", 1)[1]))
    if not parts:
        raise KeyError(f"no column {name!r} in {schema.names}")
    return parts


def _vector_to_numpy(col: pa.StructArray) -> np.ndarray:
    """pyspark.ml Vectors (Arrow: struct<type, size, indices, values>) as a dense array."""
    kinds = col.field("type").to_numpy(zero_copy_only=False)
    sizes = col.field("size").to_numpy(zero_copy_only=False)
    values = col.field("values").to_pylist()
    indices = col.field("indices").to_pylist()
    width = int(max((len(v) if k == 1 else s) for k, s, v in zip(kinds, sizes, values)))
    out = np.zeros((len(col), width), np.float64)
    for i, (k, v, ix) in enumerate(zip(kinds, values, indices)):
        if k == 1:
            out[i, :len(v)] = v
        else:
            out[i, ix] = v
    return out


def column_to_numpy(col, field: pa.Field) -> np.ndarray:
    """One Arrow column as an ``(n, ...)`` numpy array."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if pa.types.is_struct(col.type) and {"type", "values"} <= {f.name for f in col.type}:
        out = _vector_to_numpy(col)
    else:
        dims: List[int] = []
        while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or \
                pa.types.is_fixed_size_list(col.type):
            if pa.types.is_fixed_size_list(col.type):
                dims.append(col.type.list_size)
            else:
                lengths = col.value_lengths().to_numpy(zero_copy_only=False)
                dims.append(int(lengths[0]) if len(lengths) else 0)
            col = col.flatten()
        out = col.to_numpy(zero_copy_only=False)
        if dims:
            out = out.reshape(n, *dims)
    meta = field.metadata or {}
    if SHAPE_KEY in meta:
        out = out.reshape(n, *json.loads(meta[SHAPE_KEY]))
    if out.dtype == np.float64:
        out = out.astype(np.float32)
    elif out.dtype == np.bool_:
        out = out.astype(np.float32)
    return out


def batch_arrays(batch: pa.RecordBatch, names: Sequence[str],
                 labels: bool = False) -> List[np.ndarray]:
    """The arrays of ``names`` (expanded into their parts) of one record batch."""
    out = []
    for name in names:
        for part in _expand(batch.schema, name):
            i = batch.schema.get_field_index(part)
            arr = column_to_numpy(batch.column(i), batch.schema.field(i))
            if labels and np.issubdtype(arr.dtype, np.integer):
                arr = arr.astype(np.int64)
            out.append(arr)
    return out

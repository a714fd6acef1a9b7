"""Python rows <-> Arrow record batches, for the InputMode.SPARK feed.

An RDD's elements (tuples, lists, pyspark Rows, numpy arrays, scalars) become
columnar batches: one column per tuple position; numpy arrays of one shape are a
fixed-size list column with their dtype and shape kept in the schema metadata;
anything else Arrow cannot hold is pickled per value (the node only unpickles
after the feeder has proven it holds the cluster secret). DataFrame partitions
arrive as Arrow already and carry no metadata: their rows come back as tuples.
"""

from __future__ import annotations

import itertools
import json
import pickle
from typing import Iterable, Iterator, List, Optional

import numpy as np
import pyarrow as pa

LAYOUT_KEY = b"sparkorca.rows"
TARGET_BATCH_BYTES = 4 << 20
FIRST_CHUNK = 1024


def _column_kind(value) -> dict:
    if isinstance(value, np.ndarray) and value.dtype != object:
        return {"kind": "ndarray", "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, (bool, int, float, str, bytes, np.generic)) or value is None:
        return {"kind": "scalar"}
    if isinstance(value, list):
        return {"kind": "list"}
    return {"kind": "pickle"}


def detect_layout(row) -> dict:
    """How rows shaped like ``row`` become columns."""
    if isinstance(row, (tuple, list)) and not isinstance(row, np.ndarray):
        return {"row": "tuple", "columns": [_column_kind(v) for v in row]}
    return {"row": "single", "columns": [_column_kind(row)]}


def _encode_column(values: list, kind: dict) -> pa.Array:
    k = kind["kind"]
    if k == "ndarray":
        shape = tuple(kind["shape"])
        if not all(isinstance(v, np.ndarray) and v.shape == shape and v.dtype.str == kind["dtype"]
                   for v in values):
            raise TypeError("arrays of different shapes or dtypes")
        flat = np.stack(values).reshape(-1) if values else np.empty(0, kind["dtype"])
        size = int(np.prod(shape)) if shape else 1
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), size)
    if k == "pickle":
        return pa.array([pickle.dumps(v, protocol=5) for v in values], type=pa.binary())
    return pa.array(values)


def encode_rows(rows: List, layout: dict) -> pa.RecordBatch:
    """One batch; raises TypeError when ``rows`` do not fit ``layout``."""
    if layout["row"] == "tuple":
        width = len(layout["columns"])
        if any(not isinstance(r, (tuple, list)) or len(r) != width for r in rows):
            raise TypeError("rows of different lengths")
        columns = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(width)]
    else:
        columns = [rows]
    arrays = [_encode_column(vals, kind) for vals, kind in zip(columns, layout["columns"])]
    names = [f"_{i}" for i in range(len(arrays))]
    schema = pa.schema([pa.field(n, a.type) for n, a in zip(names, arrays)],
                       metadata={LAYOUT_KEY: json.dumps(layout).encode()})
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _encode_robust(chunk: list, layout: dict) -> pa.RecordBatch:
    """Encode ``chunk``; where a column does not fit its kind, pickle that column."""
    try:
        return encode_rows(chunk, layout)
    except (TypeError, ValueError, pa.ArrowException):
        pass
    if layout["row"] == "tuple" and len({len(r) if isinstance(r, (tuple, list)) else -1
                                         for r in chunk}) != 1:
        return encode_rows(chunk, {"row": "single", "columns": [{"kind": "pickle"}]})
    cols = []
    for i, kind in enumerate(layout["columns"]):
        sample = [r[i] for r in chunk] if layout["row"] == "tuple" else chunk
        try:
            _encode_column(sample, kind)
            cols.append(kind)
        except (TypeError, ValueError, pa.ArrowException):
            cols.append({"kind": "pickle"})
    return encode_rows(chunk, {"row": layout["row"], "columns": cols})


def rows_to_batches(rows: Iterable) -> Iterator[pa.RecordBatch]:
    """Record batches of about TARGET_BATCH_BYTES from an iterator of rows, lazily:
    at most one batch of rows is held at a time."""
    it = iter(rows)
    size = FIRST_CHUNK
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        batch = _encode_robust(chunk, detect_layout(chunk[0]))
        per_row = max(1, batch.nbytes // max(1, batch.num_rows))
        size = int(min(65536, max(16, TARGET_BATCH_BYTES // per_row)))
        yield batch


def layout_of(batch: pa.RecordBatch) -> Optional[dict]:
    meta = batch.schema.metadata or {}
    raw = meta.get(LAYOUT_KEY)
    return json.loads(raw) if raw else None


def _column_values(col: pa.Array, kind: Optional[dict]) -> list:
    k = kind["kind"] if kind else None
    if kind and k == "ndarray":
        return list(_ndarray_column(col, kind))
    if k == "pickle":
        return [pickle.loads(v) for v in col.to_pylist()]
    return col.to_pylist()


def _ndarray_column(col: pa.Array, kind: dict) -> np.ndarray:
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.dtype(kind["dtype"]), copy=False).reshape((len(col), *kind["shape"]))


def batch_to_rows(batch: pa.RecordBatch) -> list:
    """The rows of ``batch`` as the RDD held them (tuples for DataFrame rows)."""
    layout = layout_of(batch)
    kinds = layout["columns"] if layout else [None] * batch.num_columns
    columns = [_column_values(c, k) for c, k in zip(batch.columns, kinds)]
    if layout and layout["row"] == "single":
        return columns[0]
    return list(zip(*columns))


def column_numpy(col: pa.Array, kind: Optional[dict]) -> np.ndarray:
    """One column as a numpy array: arrays of rows stack into one more dimension."""
    k = kind["kind"] if kind else None
    if kind and k == "ndarray":
        return _ndarray_column(col, kind)
    if k == "pickle":
        return np.array([pickle.loads(v) for v in col.to_pylist()])
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        if len(lengths) and (lengths == lengths[0]).all() and col.null_count == 0:
            values = col.flatten().to_numpy(zero_copy_only=False)
            return values.reshape(len(col), int(lengths[0]))
        return np.array(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


def batch_to_numpy(batch: pa.RecordBatch) -> dict:
    """``{column name: numpy array}`` without a Python object per row."""
    layout = layout_of(batch)
    kinds = layout["columns"] if layout else [None] * batch.num_columns
    return {name: column_numpy(col, kind)
            for name, col, kind in zip(batch.schema.names, batch.columns, kinds)}

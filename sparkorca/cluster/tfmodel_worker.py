"""What ``TFModel.transform`` runs in the executors' Python workers: a SavedModel
loaded once per worker, Arrow batches in, ``batch_size`` rows per signature call,
Arrow batches out. Imports nothing of the driver side (no ``pyspark.ml``)."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import OrcaRuntimeError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    column: str
    name: str
    dtype: int
    dims: Optional[Tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    name: str
    column: str
    element: str  # Spark type of the innermost value
    depth: int    # levels of array around it


_ARROW = {"float": pa.float32(), "double": pa.float64(), "long": pa.int64(),
          "boolean": pa.bool_(), "binary": pa.binary()}
_NUMPY = {"float": np.float32, "double": np.float64, "long": np.int64, "boolean": np.bool_}


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    """Everything a partition needs (picklable, small)."""

    export_dir: str
    tags: Tuple[str, ...]
    signature_def_key: str
    fingerprint: str
    batch_size: int
    inputs: List[InputSpec]
    outputs: List[OutputSpec]

    @property
    def input_columns(self) -> List[str]:
        return [i.column for i in self.inputs]

    def spark_schema(self):
        from pyspark.sql import types as st
        kinds = {"float": st.FloatType, "double": st.DoubleType, "long": st.LongType,
                 "boolean": st.BooleanType, "binary": st.BinaryType}
        fields = []
        for out in self.outputs:
            t = kinds[out.element]()
            for _ in range(out.depth):
                t = st.ArrayType(t)
            fields.append(st.StructField(out.column, t))
        return st.StructType(fields)

    @property
    def cache_key(self) -> tuple:
        return (self.export_dir, self.tags, self.signature_def_key, self.fingerprint)


# SavedModels loaded by this Python worker, kept across partitions and transform() calls
_LOADED: "collections.OrderedDict[tuple, Tuple[Any, Any]]" = collections.OrderedDict()
_LOADED_MAX = 2
_LOADED_LOCK = threading.Lock()


def loaded_signature(plan: InferencePlan):
    """The plan's signature function, from a SavedModel this process loads once."""
    key = plan.cache_key
    with _LOADED_LOCK:
        hit = _LOADED.get(key)
        if hit is None:
            import tensorflow as tf

            from ..node.host import scratch_tempdir
            with scratch_tempdir("sparkorca-tfmodel-"):  # the functions it traces
                model = tf.saved_model.load(plan.export_dir, tags=list(plan.tags))
            hit = (model, model.signatures[plan.signature_def_key])  # the model must live on
            _LOADED[key] = hit
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
            log.info("TFModel: loaded SavedModel %s in process %d", plan.export_dir, os.getpid())
        else:
            _LOADED.move_to_end(key)
        return hit[1]


def transform_partition(plan: InferencePlan,
                        batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: ``batch_size`` rows per signature call, outputs in row order."""
    fn = None
    pending: List[pa.RecordBatch] = []
    for columns in _numpy_batches(batches, plan):
        if fn is None:
            fn = loaded_signature(plan)
        pending.append(_predict(fn, plan, columns))
        if sum(b.num_rows for b in pending) >= _OUT_ROWS:
            yield from _combined(pending)
            pending = []
    if pending:
        yield from _combined(pending)


_OUT_ROWS = 8192  # output rows per Arrow batch handed back to Spark


def _combined(batches: List[pa.RecordBatch]) -> List[pa.RecordBatch]:
    if len(batches) == 1:
        return batches
    return pa.Table.from_batches(batches).combine_chunks().to_batches()


def _numpy_batches(batches: Iterator[pa.RecordBatch], plan: InferencePlan) -> Iterator[list]:
    """Lists of numpy columns of exactly ``batch_size`` rows (the last one fewer)."""
    from .rows import column_numpy
    size = plan.batch_size
    held: List[list] = []  # rows left over from earlier record batches
    held_rows = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        cols = [_column(column_numpy, batch.column(i), spec) for i, spec in enumerate(plan.inputs)]
        n, start = batch.num_rows, 0
        if held_rows:
            take = min(size - held_rows, n)
            held.append([c[:take] for c in cols])
            held_rows += take
            start = take
            if held_rows < size:
                continue
            yield [np.concatenate(parts) for parts in zip(*held)]
            held, held_rows = [], 0
        while n - start >= size:
            yield [c[start:start + size] for c in cols]
            start += size
        if start < n:
            held, held_rows = [[c[start:] for c in cols]], n - start
    if held_rows:
        yield [np.concatenate(parts) for parts in zip(*held)]


def _column(column_numpy, col: pa.Array, spec: InputSpec) -> np.ndarray:
    if col.null_count:
        raise OrcaRuntimeError(f"TFModel: column {spec.column!r} has {col.null_count} null "
                               "value(s); every row needs a value")
    values = column_numpy(col, None)
    if values.dtype == object and not (pa.types.is_string(col.type)
                                       or pa.types.is_binary(col.type)):
        raise OrcaRuntimeError(f"TFModel: column {spec.column!r} holds arrays of different "
                               f"lengths; signature input {spec.name!r} needs one shape")
    return values


def _as_input(values: np.ndarray, spec: InputSpec):
    import tensorflow as tf
    dtype = tf.dtypes.as_dtype(spec.dtype)
    if dtype != tf.string:
        values = values.astype(dtype.as_numpy_dtype, copy=False)
    dims = spec.dims
    if dims is not None and len(dims) >= 1:
        want = dims[1:]
        have = values.shape[1:]
        if have != want and all(d >= 0 for d in want) and int(np.prod(have)) == int(np.prod(want)):
            values = values.reshape((values.shape[0], *want))  # Spark arrays are flat
        elif len(have) != len(want) or any(w >= 0 and w != h for w, h in zip(want, have)):
            raise OrcaRuntimeError(
                f"TFModel: column {spec.column!r} gives rows of shape {list(have)}, but "
                f"signature input {spec.name!r} takes rows of shape "
                f"{[None if d < 0 else d for d in want]}")
    return tf.constant(values, dtype=dtype)


def _predict(fn, plan: InferencePlan, columns: list) -> pa.RecordBatch:
    rows = len(columns[0])
    results = fn(**{spec.name: _as_input(v, spec) for spec, v in zip(plan.inputs, columns)})
    arrays = []
    for out in plan.outputs:
        value = results[out.name].numpy()
        if value.ndim == 0 or value.shape[0] != rows:
            raise OrcaRuntimeError(
                f"TFModel: output {out.name!r} has shape {list(value.shape)} for a batch of "
                f"{rows} rows; it must have one value per row")
        arrays.append(_to_arrow(value, out))
    return pa.RecordBatch.from_arrays(arrays, names=[o.column for o in plan.outputs])


def _to_arrow(value: np.ndarray, out: OutputSpec) -> pa.Array:
    if value.ndim != out.depth + 1:
        raise OrcaRuntimeError(f"TFModel: output {out.name!r} has {value.ndim} dimension(s), "
                               f"its signature says {out.depth + 1}")
    if out.element == "binary":
        flat: pa.Array = pa.array(list(value.reshape(-1)), type=pa.binary())
    else:
        flat = pa.array(np.ascontiguousarray(value, dtype=_NUMPY[out.element]).reshape(-1),
                        type=_ARROW[out.element])
    for level in range(value.ndim - 1, 0, -1):  # innermost first: a list level per dimension
        size = value.shape[level]
        count = int(np.prod(value.shape[:level]))  # lists at this level (size may be 0)
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * size)
        flat = pa.ListArray.from_arrays(offsets, flat)
    return flat


def yield_batch(iterable, batch_size: int, num_tensors: int = 1):
    """TensorFlowOnSpark's helper: ``[[col0 values], [col1 values], ...]`` of up to
    ``batch_size`` rows from an iterable of rows (a None row ends it)."""
    tensors: List[list] = [[] for _ in range(num_tensors)]
    for item in iterable:
        if item is None:
            break
        for i in range(num_tensors):
            cell = item[i]
            tensors[i].append(bytes(cell) if isinstance(cell, bytearray) else cell)
        if len(tensors[0]) >= batch_size:
            yield tensors
            tensors = [[] for _ in range(num_tensors)]
    if tensors[0]:
        yield tensors

"""``XShards.partition``: driver-side arrays cut into shards of the same structure."""

from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from .. import _validate as check
from ..errors import InvalidArgumentError
from . import _kinds

_ACCEPTED = ("an ndarray, or a list, tuple or dict (possibly nested) whose leaves are "
             "ndarrays (or pandas DataFrames/Series) of one length")


def _check_structure(data: Any, path: str) -> None:
    """Every container is a plain list/tuple/dict (as Orca: its shards are rebuilt with
    the same types) and every leaf an array-like with rows."""
    if type(data) in (list, tuple):
        if not data:
            raise InvalidArgumentError("data", f"an empty {type(data).__name__} at {path}",
                                       _ACCEPTED)
        for i, v in enumerate(data):
            _check_structure(v, f"{path}[{i}]")
    elif type(data) is dict:
        if not data:
            raise InvalidArgumentError("data", f"an empty dict at {path}", _ACCEPTED)
        for k, v in data.items():
            _check_structure(v, f"{path}[{k!r}]")
    elif _kinds.structure_rows(data) is None:
        import pandas as pd
        what = f"a 0-d ndarray at {path}" if isinstance(data, np.ndarray) else \
            f"a {type(data).__module__}.{type(data).__name__} at {path}"
        if isinstance(data, (pd.DataFrame, pd.Series)) or type(data) not in (list, tuple, dict):
            raise InvalidArgumentError("data", what, _ACCEPTED)


def _bounds(rows: int, n: int) -> List[int]:
    """Cut points of ``rows`` into ``n`` contiguous pieces, the first ``rows % n`` one row
    longer (``np.array_split``'s rule, as Orca)."""
    size, extra = divmod(rows, n)
    points = [0]
    for i in range(n):
        points.append(points[-1] + size + (1 if i < extra else 0))
    return points


def partition(data: Any, num_shards: Optional[int] = None):
    from .shards import XShards, _spark_context
    sc = _spark_context()
    _check_structure(data, "data")
    lengths = sorted({_kinds.rows(leaf) for leaf in _kinds.leaves(data)})
    if len(lengths) != 1:
        raise InvalidArgumentError("data", f"arrays of {lengths} rows",
                                   "arrays that all have the same size in the first dimension")
    rows = lengths[0]
    n = int(check.integer("num_shards", num_shards if num_shards is not None
                          else sc.defaultParallelism) or 1)
    if rows < n:
        raise InvalidArgumentError("num_shards", n, f"at most {rows}, the length of data",
                                   hint="there must be at least one row per shard")
    points = _bounds(rows, n)
    # Views into the driver's arrays; parallelize pickles them once into the file the
    # JVM reads, and each partition receives only its own slice: no per-row objects.
    shards = [_kinds.take(data, points[i], points[i + 1]) for i in range(n)]
    name = _kinds.class_name(data)
    return XShards(sc.parallelize(shards, n), class_name=name)

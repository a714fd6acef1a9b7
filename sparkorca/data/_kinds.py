"""What a shard is, and how its rows are counted, cut, picked and glued back.

Executor-side helpers: numpy and pandas only, nothing of the driver.

Orca allowed four kinds of shard (pandas DataFrame, ndarray, list, dict of
ndarrays), and tuples and Series appear along the way (``zip``, ``shards[col]``).
Rows are read as follows:

- DataFrame, Series, ndarray of ndim >= 1: ``len(shard)`` rows, cut along axis 0.
- dict, tuple or list whose leaves (nested dicts/tuples/lists) are all row-aligned
  arrays of one length, as ``XShards.partition`` makes them (``{"x": (a, b), "y":
  c}``): a *structure*, cut leaf by leaf and rebuilt in the same shape.
- any other list: a list of *records* (``len`` rows, cut as a list), as Orca's
  ``repartition`` read list shards.
- anything else (a ``(feature, label)`` tuple, a ``(train, test)`` pair, a scalar,
  a 0-d array, a dict of scalars): one record, moved whole.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import pandas as pd


def class_name(shard: Any) -> str:
    """Orca's name of a shard's type: ``pandas.core.frame.DataFrame``, ``numpy.ndarray``,
    ``builtins.dict`` ..."""
    cls = type(shard)
    return f"{cls.__module__}.{cls.__name__}"


def _leaf_rows(x: Any) -> Optional[int]:
    if isinstance(x, (pd.DataFrame, pd.Series)):
        return len(x)
    if isinstance(x, np.ndarray) and x.ndim >= 1:
        return x.shape[0]
    return None


def structure_rows(x: Any) -> Optional[int]:
    """Rows of a row-aligned shard (a leaf or a structure of leaves of one length);
    None for records and for unsplittable shards."""
    leaf = _leaf_rows(x)
    if leaf is not None:
        return leaf
    if isinstance(x, dict):
        parts = list(x.values())
    elif isinstance(x, (list, tuple)):
        parts = list(x)
    else:
        return None
    if not parts:
        return None
    counts = {structure_rows(p) for p in parts}
    if len(counts) != 1 or None in counts:
        return None
    return counts.pop()


def is_records(x: Any) -> bool:
    return isinstance(x, list) and structure_rows(x) is None


def rows(x: Any) -> int:
    """Rows of a shard as ``len(XShards)`` counts them (1 for an unsplittable shard)."""
    n = structure_rows(x)
    if n is not None:
        return n
    if is_records(x):
        return len(x)
    return 1


def splittable(x: Any) -> bool:
    return structure_rows(x) is not None or is_records(x)


def take(x: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a splittable shard, in the same shape."""
    return pick(x, slice(start, stop))


def pick(x: Any, index) -> Any:
    """The rows at ``index`` (a slice or an int array) of a splittable shard."""
    if is_records(x):
        if isinstance(index, slice):
            return x[index]
        return [x[i] for i in index]
    return _pick_structure(x, index)


def _pick_structure(x: Any, index) -> Any:
    if isinstance(x, (pd.DataFrame, pd.Series)):
        return x.iloc[index]
    if isinstance(x, np.ndarray):
        return x[index]
    if isinstance(x, dict):
        return {k: _pick_structure(v, index) for k, v in x.items()}
    return type(x)(_pick_structure(v, index) for v in x)


def concat(pieces: Sequence[Any]) -> Any:
    """Pieces of one kind (as ``take`` cuts them) glued back into one shard."""
    first = pieces[0]
    if len(pieces) == 1:
        return first
    if is_records(first):
        out: List[Any] = []
        for p in pieces:
            out.extend(p)
        return out
    return _concat_structure(pieces)


def _concat_structure(pieces: Sequence[Any]) -> Any:
    first = pieces[0]
    if isinstance(first, (pd.DataFrame, pd.Series)):
        return pd.concat(pieces, ignore_index=True)
    if isinstance(first, np.ndarray):
        return np.concatenate(pieces, axis=0)
    if isinstance(first, dict):
        return {k: _concat_structure([p[k] for p in pieces]) for k in first}
    return type(first)(_concat_structure([p[i] for p in pieces]) for i in range(len(first)))


def same_shape(a: Any, b: Any) -> bool:
    """Whether two pieces can be glued: the same kind and, for structures, the same keys."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and not is_records(a):
        return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b))
    return True


def glue(pieces: Sequence[Any]) -> List[Any]:
    """Consecutive pieces that can be glued become one shard; the rest stay as they are."""
    out: List[Any] = []
    run: List[Any] = []
    for p in pieces:
        if run and not (splittable(p) and same_shape(run[0], p)):
            out.append(concat(run))
            run = []
        if splittable(p):
            run.append(p)
        else:
            out.append(p)
    if run:
        out.append(concat(run))
    return out


def map_leaves(x: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` on every leaf of a list/tuple/dict structure, rebuilt in the same shape."""
    if isinstance(x, dict):
        return {k: map_leaves(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(map_leaves(v, fn) for v in x)
    return fn(x)


def leaves(x: Any) -> List[Any]:
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in leaves(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in leaves(v)]
    return [x]

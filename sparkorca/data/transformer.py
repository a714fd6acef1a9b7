"""Orca's ``bigdl.orca.data.transformer``: MinMaxScaler and StandardScaler on columns of
XShards of pandas DataFrames.

As Orca's (which ran Spark ML's scalers on a VectorAssembler of ``inputCol``),
every original column is kept and ``outputCol`` is appended: per row, an array
of the scaled values of ``inputCol`` (length ``len(inputCol)``, even for one
column). The statistics are Spark ML's (global over all shards; StandardScaler's
standard deviation is the sample one), computed on the executors and combined
on the driver (only one number per column and statistic travels); the scaling
runs on each shard where it is. Unlike Orca, the arrays are float64 (Spark's
vectors are; Orca cast them to float32), the shards keep their partitioning,
and ``fit`` exists on its own.
"""

from __future__ import annotations

import functools
import numbers
from typing import List, Optional, Union

import numpy as np

from ..errors import InvalidArgumentError, OrcaRuntimeError

Columns = Union[str, List[str]]


def _stats_of_partition(cols, shards):
    """count, NaN count, min, max, mean and sum of squared deviations per column."""
    out = None
    for df in shards:
        values = df[cols].to_numpy(dtype=np.float64)
        nans = np.isnan(values).sum(axis=0)
        n = len(values)
        if n == 0:
            continue
        part = (n, nans, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                values.mean(axis=0), ((values - values.mean(axis=0)) ** 2).sum(axis=0))
        out = part if out is None else _merge(out, part)
    if out is not None:
        yield out


def _merge(a, b):
    """Chan et al.'s pairwise combination of (count, mean, M2)."""
    n = a[0] + b[0]
    delta = b[4] - a[4]
    mean = a[4] + delta * b[0] / n
    m2 = a[5] + b[5] + delta ** 2 * a[0] * b[0] / n
    return (n, a[1] + b[1], np.minimum(a[2], b[2]), np.maximum(a[3], b[3]), mean, m2)


def _apply(cols, out_col, scale, shift, df):
    """Append ``out_col``: per row, ``values * scale + shift`` as one float64 array."""
    import pandas as pd
    scaled = df[cols].to_numpy(dtype=np.float64) * scale + shift
    return df.assign(**{out_col: pd.Series(list(scaled), index=df.index, dtype=object)})


class _Scaler:
    _name = "scaler"

    def __init__(self, inputCol: Optional[Columns] = None, outputCol: Optional[str] = None):
        self.inputCol: Optional[List[str]] = None
        self.outputCol: Optional[str] = None
        self._fitted: Optional[tuple] = None
        if inputCol:
            self.setInputOutputCol(inputCol, outputCol)

    def setInputOutputCol(self, inputCol: Columns, outputCol: Optional[str]) -> None:
        """The columns to scale and the name of the column of scaled arrays."""
        cols = [inputCol] if isinstance(inputCol, str) else inputCol
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise InvalidArgumentError("inputCol", inputCol, "a column name or a non-empty "
                                       "list of them")
        if not isinstance(outputCol, str) or not outputCol:
            raise InvalidArgumentError("outputCol", outputCol, "a column name (outputColumn "
                                       "cannot be empty)")
        self.inputCol, self.outputCol = list(cols), outputCol
        self._fitted = None

    def _check(self, shards) -> None:
        from .shards import DATAFRAME, XShards
        if not isinstance(shards, XShards):
            raise InvalidArgumentError("shards", type(shards).__name__, "an XShards of "
                                       "pandas DataFrames")
        if self.inputCol is None or self.outputCol is None:
            raise InvalidArgumentError("inputCol", None, "columns to scale: pass inputCol= "
                                       "and outputCol= or call setInputOutputCol")
        meta = shards._need(self._name, DATAFRAME)
        shards._check_columns("inputCol", self.inputCol, self._name)
        if self.outputCol in (meta.columns or []):
            raise InvalidArgumentError("outputCol", self.outputCol, "a column the shards do "
                                       "not have yet")
        dtypes = meta.dtypes
        bad = [c for c in self.inputCol if dtypes[c].kind not in "biuf"]
        if bad:
            raise InvalidArgumentError("inputCol", self.inputCol, "numeric or boolean columns",
                                       hint=f"not numeric: {bad}")

    def fit(self, shards) -> "_Scaler":
        """Compute the statistics of ``inputCol`` over all shards."""
        from .shards import run_job
        self._check(shards)
        cols = list(self.inputCol or [])
        parts = run_job(f"{self._name}.fit", lambda: shards.rdd.mapPartitions(
            functools.partial(_stats_of_partition, cols)).collect())
        if not parts:
            raise InvalidArgumentError("shards", "empty", "shards with rows to fit on")
        stats = functools.reduce(_merge, parts)
        missing = [c for c, k in zip(cols, stats[1]) if k]
        if missing:
            raise InvalidArgumentError("inputCol", self.inputCol, "columns without missing "
                                       "values (as Spark's VectorAssembler)",
                                       hint=f"missing values in {missing}")
        self._fitted = self._parameters(stats)
        return self

    def _parameters(self, stats) -> tuple:
        raise NotImplementedError

    def transform(self, shards):
        """The shards with ``outputCol`` appended, scaled with the fitted statistics."""
        if self._fitted is None:
            raise OrcaRuntimeError(f"{type(self).__name__}.transform needs fitted statistics: "
                                   "call fit or fit_transform first")
        self._check(shards)
        scale, shift = self._fitted
        return shards.transform_shard(functools.partial(
            _apply, list(self.inputCol or []), self.outputCol, scale, shift))

    def fit_transform(self, shards):
        """``fit(shards)`` then ``transform(shards)``."""
        return self.fit(shards).transform(shards)


class MinMaxScaler(_Scaler):
    """Rescale columns to ``[min, max]``: ``(x - E_min) / (E_max - E_min) * (max - min) +
    min`` (a constant column gives ``(min + max) / 2``), as Spark ML's.

    Examples
    --------
    >>> from sparkorca.data.transformer import MinMaxScaler
    >>> scaler = MinMaxScaler(inputCol=["age", "income"], outputCol="scaled")
    >>> shards = scaler.fit_transform(shards)        # shards["scaled"]: arrays of 2
    >>> test = scaler.transform(test)                 # the training statistics
    """

    _name = "MinMaxScaler"

    def __init__(self, min: float = 0.0, max: float = 1.0, inputCol: Optional[Columns] = None,
                 outputCol: Optional[str] = None):
        for name, value in (("min", min), ("max", max)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise InvalidArgumentError(name, value, "a number")
        if not min < max:
            raise InvalidArgumentError("max", max, f"a number greater than min={min}")
        self.min, self.max = float(min), float(max)
        super().__init__(inputCol, outputCol)

    def _parameters(self, stats) -> tuple:
        low, high = stats[2], stats[3]
        span = high - low
        safe = np.where(span == 0, 1.0, span)
        scale = np.where(span == 0, 0.0, (self.max - self.min) / safe)
        shift = np.where(span == 0, 0.5 * (self.max + self.min), self.min - low * scale)
        return scale, shift


class StandardScaler(_Scaler):
    """Scale columns by their (sample) standard deviation, and centre them with
    ``withMean=True``; a column without variance gives 0, as Spark ML's.

    Examples
    --------
    >>> from sparkorca.data.transformer import StandardScaler
    >>> shards = StandardScaler(withMean=True, inputCol="price",
    ...                         outputCol="price_std").fit_transform(shards)
    """

    _name = "StandardScaler"

    def __init__(self, withMean: bool = False, withStd: bool = True,
                 inputCol: Optional[Columns] = None, outputCol: Optional[str] = None):
        from .. import _validate as check
        self.withMean = check.boolean("withMean", withMean)
        self.withStd = check.boolean("withStd", withStd)
        super().__init__(inputCol, outputCol)

    def _parameters(self, stats) -> tuple:
        n, mean, m2 = stats[0], stats[4], stats[5]
        std = np.sqrt(m2 / (n - 1)) if n > 1 else np.zeros_like(mean)
        scale = np.ones_like(mean)
        if self.withStd:
            scale = np.where(std == 0, 0.0, 1.0 / np.where(std == 0, 1.0, std))
        shift = -mean * scale if self.withMean else np.zeros_like(mean)
        return scale, shift


__all__ = ["MinMaxScaler", "StandardScaler"]

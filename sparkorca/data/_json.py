"""read_json with the spark backend, giving the frames pandas.read_json gives.

JSON lines (``lines=True``, sparkorca's default on both backends, as Spark reads
JSON) and a JSON array of records (``lines=False, orient="records"``) are read by
Spark (its schema inference parses every record: a malformed file fails at the
call); each partition becomes a DataFrame through Arrow, with the columns in the
order of the first record of the first file (Spark sorts them by name), and pandas' own conversions
(``dtype``, ``convert_dates``, ``keep_default_dates``, ``date_unit``,
``convert_axes``) run on each shard. Other orients, ``typ="series"`` and
``nrows`` read with pandas on the executors, one file per task.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import InvalidArgumentError

log = logging.getLogger(__name__)

NOT_FOR_SHARDS = {"chunksize"}
SPARK_OPTIONS = {"multiLine", "mode", "allowComments", "allowUnquotedFieldNames",
                 "allowSingleQuotes", "allowNumericLeadingZeros", "lineSep",
                 "dropFieldIfAllNull"}
_CONVERSIONS = ("dtype", "convert_axes", "convert_dates", "keep_default_dates", "date_unit",
                "precise_float")


def pandas_arguments() -> set:
    import pandas as pd
    return set(inspect.signature(pd.read_json).parameters) - {"path_or_buf"}


@dataclass
class JsonPlan:
    options: Dict[str, str] = field(default_factory=dict)
    conversions: Dict[str, Any] = field(default_factory=dict)
    multiline: bool = False
    fallback: Optional[str] = None


def plan(kwargs: dict, files: List[str]) -> JsonPlan:
    p = JsonPlan()
    kw = dict(kwargs)
    reasons: List[str] = []
    lines = kw.pop("lines", True)
    orient = kw.pop("orient", None)
    if lines:
        if orient not in (None, "records"):
            raise InvalidArgumentError("orient", orient, "'records' or None with lines=True "
                                       "(pandas: 'lines' only works with orient='records')")
    elif orient == "records":
        p.multiline = True
        p.options["multiLine"] = "true"
    else:
        reasons.append("orient" if orient is not None else "lines")
    if kw.pop("typ", "frame") != "frame":
        reasons.append("typ")
    for name in _CONVERSIONS:
        if name in kw:
            p.conversions[name] = kw.pop(name)
    encoding = kw.pop("encoding", None)
    if encoding is not None:
        p.options["encoding"] = str(encoding)
    if kw.pop("encoding_errors", "strict") != "strict":
        reasons.append("encoding_errors")
    if kw.pop("compression", "infer") != "infer":
        reasons.append("compression")
    if kw.pop("engine", "ujson") != "ujson":
        reasons.append("engine")
    for name in list(kw):
        if name in SPARK_OPTIONS:
            value = kw.pop(name)
            p.options[name] = ("true" if value else "false") if isinstance(value, bool) \
                else str(value)
    reasons += sorted(kw)  # nrows, storage_options, dtype_backend
    if reasons:
        p.fallback = ", ".join(reasons)
    return p


def _first_record_keys(url: str, multiline: bool) -> List[str]:
    """The keys of the first record of a file, in file order: a cheap read of its
    first line (JSON lines) or of its head, up to the end of the first record (a
    JSON array). Empty when that cannot be read: Spark's own read reports why."""
    import fsspec
    decoder = json.JSONDecoder()
    try:
        with fsspec.open(url, "rt", compression="infer") as f:
            if not multiline:
                for line in f:
                    if line.strip():
                        record = json.loads(line)
                        return list(record) if isinstance(record, dict) else []
                return []
            head = ""
            while len(head) < (16 << 20):
                chunk = f.read(64 << 10)
                head += chunk
                text = head.lstrip().lstrip("[").lstrip()
                try:
                    record, _ = decoder.raw_decode(text)
                    return list(record) if isinstance(record, dict) else []
                except ValueError:
                    if not chunk:
                        return []
    except (OSError, ValueError):
        return []
    return []


def spark_frame(spark, files: List[str], p: JsonPlan):
    reader = spark.read.options(**{"mode": "FAILFAST", **p.options})
    sdf = reader.json(files)  # infers the schema now: every record is parsed
    first = [k for k in _first_record_keys(files[0], p.multiline) if k in sdf.columns]
    order = first + [c for c in sdf.columns if c not in first]
    sdf = sdf.select([f"`{c}`" for c in order])
    return sdf, functools.partial(_post, dict(p.conversions))


def _post(conversions: dict, df):
    """pandas.read_json's conversions after parsing (its FrameParser), on one shard."""
    try:
        from pandas.io.json._json import FrameParser
    except ImportError:  # pragma: no cover - a future pandas
        return df
    dtype = conversions.get("dtype", True)
    parser = FrameParser("", "records", dtype=True if dtype is None else dtype,
                         convert_axes=conversions.get("convert_axes", True) is not False,
                         convert_dates=conversions.get("convert_dates", True),
                         keep_default_dates=conversions.get("keep_default_dates", True),
                         precise_float=conversions.get("precise_float", False),
                         date_unit=conversions.get("date_unit"))
    for col in [c for c, t in df.dtypes.items() if t.kind == "O"]:
        present = df[col].dropna()
        if len(present) and not isinstance(present.iloc[0], str):
            df[col] = df[col].map(_plain)
    parser.obj = df
    if parser.convert_axes:
        parser._convert_axes()
    parser._try_convert_types()
    return parser.obj


def _plain(value):
    """Arrow hands nested JSON arrays over as ndarrays; pandas reads them as lists."""
    import numpy as np
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value

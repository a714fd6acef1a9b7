"""read_csv with the spark backend, giving the frames pandas.read_csv gives.

Spark reads every column as a string; the typing follows pandas' rules, decided
once for the whole data set by one aggregate in the JVM (which also parses every
row: a malformed file fails at the read call):

- the pandas missing-value tokens (``NA``, ``null``, ``""`` ..., ``na_values``,
  ``keep_default_na``) are missing;
- a column of integers is int64 (float64 with missing values), of numbers
  float64 (``thousands`` and ``decimal`` honoured), of ``True``/``False`` (and
  ``true_values``/``false_values``) bool (object with missing values); anything
  else stays strings (object), dates included, as pandas without ``parse_dates``.

Spark casts the columns to those types, each partition becomes a DataFrame
through Arrow, and what pandas does after parsing runs on each shard: column
names (``header=None`` gives 0, 1, ...; ``names``), ``converters``, ``dtype``,
``parse_dates``, ``index_col``.

Arguments that change how the text is cut into fields in ways Spark's reader
cannot (``skiprows``, ``nrows``, ``skipfooter``, a regex ``sep``, ``comment``
...) make this read use pandas on the executors, one file per task, as the
pandas backend does: the frames are the same, only the split of big files is lost.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import InvalidArgumentError

try:  # pandas' own list of the strings read_csv reads as missing
    from pandas._libs.parsers import STR_NA_VALUES as _PANDAS_NA
except ImportError:  # pragma: no cover - a future pandas
    _PANDAS_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                  "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                  "nan", "null"}

DEFAULT_NA = frozenset(_PANDAS_NA)
DEFAULT_TRUE = ("True", "TRUE", "true")
DEFAULT_FALSE = ("False", "FALSE", "false")

# pandas 2 removed these; the rest of read_csv's arguments are accepted
REMOVED = {
    "squeeze": "call .squeeze('columns') on each shard (transform_shard) instead",
    "prefix": "rename the columns after reading instead",
    "mangle_dupe_cols": "pandas always renames duplicate columns now",
    "error_bad_lines": "use on_bad_lines='error'",
    "warn_bad_lines": "use on_bad_lines='warn'",
}
NOT_FOR_SHARDS = {"iterator", "chunksize"}  # a reader of chunks is not a set of shards


def pandas_arguments() -> set:
    import pandas as pd
    return set(inspect.signature(pd.read_csv).parameters) - {"filepath_or_buffer"}


# Spark CSV options Orca passed through on its spark backend (spark backend only)
SPARK_OPTIONS = {"multiLine", "lineSep", "maxColumns", "maxCharsPerColumn", "mode",
                 "unescapedQuoteHandling", "ignoreLeadingWhiteSpace",
                 "ignoreTrailingWhiteSpace", "charToEscapeQuoteEscaping"}

_ENCODINGS = {"utf-8": "UTF-8", "utf8": "UTF-8", "latin-1": "ISO-8859-1",
              "latin1": "ISO-8859-1", "iso-8859-1": "ISO-8859-1", "ascii": "US-ASCII",
              "cp1252": "windows-1252"}
_PANDAS_ONLY_SUFFIXES = (".zip", ".xz", ".zst", ".tar", ".tar.gz", ".tgz", ".tar.bz2")

# pandas reads a field as a number when it looks like one of these (C parser rules)
_INT_RE = r"^\s*[+-]?[0-9]+\s*$"
_FLOAT_RE = (r"^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity)\s*$")


@dataclass
class CsvPlan:
    """How one read_csv call runs with Spark: reader options, the pandas steps after
    parsing, or why it runs with pandas on the executors instead (``fallback``)."""

    options: Dict[str, str] = field(default_factory=dict)
    header: bool = True
    names: Optional[list] = None
    ddl: Optional[str] = None
    usecols: Any = None
    dtype: Any = None
    converters: Dict[Any, Callable] = field(default_factory=dict)
    true_values: Tuple[str, ...] = DEFAULT_TRUE
    false_values: Tuple[str, ...] = DEFAULT_FALSE
    na_tokens: frozenset = DEFAULT_NA
    na_by_column: Dict[Any, frozenset] = field(default_factory=dict)
    na_filter: bool = True
    parse_dates: Any = None
    date_kwargs: Dict[str, Any] = field(default_factory=dict)
    index_col: Any = None
    thousands: Optional[str] = None
    decimal: str = "."
    fallback: Optional[str] = None


def _tokens(value) -> frozenset:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset([value])
    return frozenset(str(v) for v in value)


def plan(kwargs: dict, files: List[str]) -> CsvPlan:
    """The plan of a read_csv call (pure: no Spark). Arguments pandas itself refuses
    raise InvalidArgumentError here, naming the argument."""
    p = CsvPlan()
    kw = dict(kwargs)
    reasons: List[str] = []

    def fallback(name: str) -> None:
        reasons.append(name)

    if "sep" in kw and "delimiter" in kw and kw["delimiter"] is not None:
        raise InvalidArgumentError("delimiter", kw["delimiter"], "nothing when sep is given "
                                   "(pandas: 'Specified a sep and a delimiter; you can only "
                                   "specify one.')")
    sep = kw.pop("sep", None) if "sep" in kw else kw.pop("delimiter", None)
    kw.pop("delimiter", None)
    if sep is None:
        sep = ","
    if not isinstance(sep, str) or len(sep) != 1:
        fallback("sep")  # pandas reads a longer sep as a regular expression
    else:
        p.options["sep"] = sep

    names = kw.pop("names", None)
    header = kw.pop("header", "infer")
    if isinstance(header, bool):
        raise InvalidArgumentError("header", header, "an int, a list of ints, 'infer' or None "
                                   "(pandas refuses a bool)")
    if header == "infer":
        header = 0 if names is None else None
    if header == 0:
        p.header = True
    elif header is None:
        p.header = False
    else:
        fallback("header")
    if isinstance(names, str):
        p.ddl = names  # Orca: a str names is a Spark DDL schema
    elif names is not None:
        names = list(names)
        if len(set(names)) != len(names):
            raise InvalidArgumentError("names", names, "names without duplicates")
        p.names = names
    p.options["header"] = "true" if p.header else "false"

    usecols = kw.pop("usecols", None)
    if usecols is not None and not callable(usecols):
        usecols = list(usecols)
        if not (all(isinstance(c, str) for c in usecols) or
                all(isinstance(c, int) and not isinstance(c, bool) for c in usecols)):
            raise InvalidArgumentError("usecols", usecols, "a list of column names, a list of "
                                       "column positions, or a callable")
    p.usecols = usecols

    p.dtype = kw.pop("dtype", None)
    converters = kw.pop("converters", None) or {}
    if not isinstance(converters, dict) or not all(callable(f) for f in converters.values()):
        raise InvalidArgumentError("converters", converters, "a dict of column -> function")
    p.converters = dict(converters)
    p.true_values = DEFAULT_TRUE + tuple(_tokens(kw.pop("true_values", None)))
    p.false_values = DEFAULT_FALSE + tuple(_tokens(kw.pop("false_values", None)))

    na_values = kw.pop("na_values", None)
    keep_default = kw.pop("keep_default_na", True)
    p.na_filter = kw.pop("na_filter", True)
    base = DEFAULT_NA if keep_default else frozenset()
    if isinstance(na_values, dict):
        p.na_tokens = base
        p.na_by_column = {k: base | _tokens(v) for k, v in na_values.items()}
    else:
        p.na_tokens = base | _tokens(na_values)

    parse_dates = kw.pop("parse_dates", None)
    if parse_dates not in (None, False, True) and (
            not isinstance(parse_dates, (list, tuple)) or
            any(isinstance(c, (list, tuple, dict)) for c in parse_dates)):
        fallback("parse_dates")  # combining columns into one date
    p.parse_dates = parse_dates if parse_dates else None
    for name in ("date_format", "dayfirst", "cache_dates"):
        if name in kw:
            p.date_kwargs[{"cache_dates": "cache"}.get(name, name)] = kw.pop(name)
    kw.pop("infer_datetime_format", None)  # pandas 2 ignores it (it always infers)
    if kw.pop("keep_date_col", False):
        fallback("keep_date_col")

    p.index_col = kw.pop("index_col", None)
    if p.index_col is False:
        p.index_col = None

    thousands = kw.pop("thousands", None)
    decimal = kw.pop("decimal", ".")
    if (thousands is not None and (not isinstance(thousands, str) or len(thousands) != 1)) \
            or not isinstance(decimal, str) or len(decimal) != 1:
        raise InvalidArgumentError("thousands" if thousands is not None and
                                   (not isinstance(thousands, str) or len(thousands) != 1)
                                   else "decimal", thousands if thousands else decimal,
                                   "a single character")
    p.thousands, p.decimal = thousands, decimal

    quotechar = kw.pop("quotechar", '"')
    quoting = kw.pop("quoting", 0)
    doublequote = kw.pop("doublequote", True)
    escapechar = kw.pop("escapechar", None)
    if quoting == 3:  # csv.QUOTE_NONE
        p.options["quote"] = "\u0000"
    elif quoting == 0:
        p.options["quote"] = quotechar
    else:
        fallback("quoting")
    if escapechar is not None:
        p.options["escape"] = escapechar
    elif doublequote:
        # pandas reads "" inside quotes as one quote and a backslash as itself
        p.options["escape"] = quotechar
    else:
        fallback("doublequote")

    encoding = kw.pop("encoding", None)
    if encoding is not None:
        if str(encoding).lower() in _ENCODINGS:
            p.options["encoding"] = _ENCODINGS[str(encoding).lower()]
        else:
            fallback("encoding")
    if kw.pop("encoding_errors", "strict") != "strict":
        fallback("encoding_errors")
    lineterminator = kw.pop("lineterminator", None)
    if lineterminator is not None:
        p.options["lineSep"] = lineterminator
    if kw.pop("skipinitialspace", False):
        p.options["ignoreLeadingWhiteSpace"] = "true"
    if not kw.pop("skip_blank_lines", True):
        fallback("skip_blank_lines")
    on_bad_lines = kw.pop("on_bad_lines", "error")
    if on_bad_lines == "error":
        p.options["mode"] = "FAILFAST"
    elif on_bad_lines == "skip":
        p.options["mode"] = "DROPMALFORMED"
    else:
        fallback("on_bad_lines")
    compression = kw.pop("compression", "infer")
    if compression != "infer" or any(f.lower().endswith(_PANDAS_ONLY_SUFFIXES) for f in files):
        fallback("compression")
    if kw.pop("engine", None) not in (None, "c"):
        fallback("engine")
    for ignored in ("low_memory", "memory_map", "float_precision", "verbose"):
        kw.pop(ignored, None)  # no effect on the values read here
    for name in list(kw):
        if name in SPARK_OPTIONS:
            p.options[name] = _spark_value(kw.pop(name))
    # what is left (skiprows, nrows, skipfooter, comment, dialect, delim_whitespace,
    # date_parser, storage_options, dtype_backend ...) needs pandas' own parser
    reasons += sorted(kw)
    if reasons:
        p.fallback = ", ".join(reasons)
    return p


def _spark_value(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _sql_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _in(col: str, tokens) -> str:
    tokens = sorted(tokens)
    if not tokens:
        return "false"
    return f"{col} IN ({', '.join(_sql_str(t) for t in tokens)})"


@dataclass
class _Column:
    source: str  # Spark column name as read
    label: Any  # pandas label
    mode: str  # "infer" | "string" | "raw"
    na: frozenset


def _first_fields(url: str, p: CsvPlan) -> List[str]:
    """The fields of the first non-blank line of a file (its header, or its first row
    with header=None), read on the driver with Python's csv module: a few KB, no
    Spark job."""
    import csv

    import fsspec
    quote = p.options.get("quote", '"')
    escape = p.options.get("escape")
    dialect: Dict[str, Any] = {
        "delimiter": p.options.get("sep", ","),
        "quotechar": quote if quote != "\u0000" else None,
        "quoting": csv.QUOTE_NONE if quote == "\u0000" else csv.QUOTE_MINIMAL,
        "doublequote": escape in (None, quote),
        "escapechar": escape if escape not in (None, quote) else None,
        "skipinitialspace": p.options.get("ignoreLeadingWhiteSpace") == "true",
    }
    with fsspec.open(url, "rt", encoding=p.options.get("encoding", "utf-8"),
                     compression="infer", newline="") as f:
        for row in csv.reader(f, **dialect):
            if any(field.strip() for field in row):
                return row
    return []


def pandas_names(fields: List[str]) -> List[str]:
    """Header names as pandas makes them: ``Unnamed: i`` for an empty one, ``a.1``,
    ``a.2`` ... for repeats."""
    names = [f if f != "" else f"Unnamed: {i}" for i, f in enumerate(fields)]
    counts: Dict[str, int] = {}
    out = []
    for name in names:
        count = counts.get(name, 0)
        while count > 0:
            counts[name] = count + 1
            name = f"{name}.{count}"
            count = counts.get(name, 0)
        counts[name] = count + 1
        out.append(name)
    return out


def _labels_and_selection(p: CsvPlan, fields: List[str]) -> List[Tuple[str, Any]]:
    """(Spark column, pandas label) of each column kept, in file order."""
    n = len(fields)
    read_names = [f"_c{i}" for i in range(n)]
    if p.header:
        file_labels: List[Any] = pandas_names(fields)
    else:
        file_labels = list(range(n))
    names_after = False
    if p.names is not None:
        if len(p.names) == n:
            file_labels = list(p.names)
        elif isinstance(p.usecols, list) and len(p.names) == len(p.usecols):
            names_after = True
        else:
            raise InvalidArgumentError("names", p.names, f"{n} names, one per column of the "
                                       "file" + (", or one per column of usecols"
                                                 if p.usecols is not None else ""))
    positions = list(range(n))
    if p.usecols is not None:
        if callable(p.usecols):
            positions = [i for i in range(n) if p.usecols(file_labels[i])]
        elif p.usecols and isinstance(p.usecols[0], int):
            bad = [i for i in p.usecols if not 0 <= i < n]
            if bad:
                raise InvalidArgumentError("usecols", p.usecols, f"positions in 0..{n - 1}",
                                           hint=f"out of bounds: {bad}")
            positions = sorted(set(p.usecols))
        else:
            labels = [str(x) for x in file_labels] if not names_after else \
                [str(x) for x in file_labels]
            missing = [c for c in p.usecols if c not in labels]
            if missing:
                raise InvalidArgumentError("usecols", p.usecols,
                                           f"columns of the file: {file_labels}",
                                           hint=f"columns expected but not found: {missing}")
            positions = [i for i in range(n) if labels[i] in p.usecols]
    chosen = [(read_names[i], file_labels[i]) for i in positions]
    if names_after:
        chosen = [(src, name) for (src, _), name in zip(chosen, p.names or [])]
    return chosen


def _column_dtype(p: CsvPlan, label, position: int):
    if isinstance(p.dtype, dict):
        if label in p.dtype:
            return p.dtype[label]
        if isinstance(position, int) and position in p.dtype and not isinstance(label, int):
            return p.dtype[position]  # Orca: an int key is a column position
        return None
    return p.dtype


def _is_plain_str(dtype) -> bool:
    return dtype in (str, object, "str", "object") or (
        _is_string_dtype(dtype) and dtype != "string")


def _is_string_dtype(dtype) -> bool:
    import numpy as np
    if dtype is None:
        return False
    if dtype in (str, object, "str", "object", "string"):
        return True
    try:
        return np.dtype(dtype).kind in "OUS"
    except TypeError:
        return False


def spark_frame(spark, files: List[str], p: CsvPlan):
    """The Spark DataFrame of the typed columns and the per-shard pandas step."""
    from pyspark.sql.types import StringType, StructField, StructType
    reader = spark.read.options(**p.options)
    if p.ddl is not None:
        sdf = reader.schema(p.ddl).csv(files)
        columns = [_Column(c, c, "typed", frozenset()) for c in sdf.columns]
        if p.usecols is not None:
            chosen = _labels_and_selection(CsvPlan(header=True, usecols=p.usecols),
                                           list(sdf.columns))
            columns = [_Column(sdf.columns[int(c[2:])], label, "typed", frozenset())
                       for c, label in chosen]
        return sdf.select([f"`{c.source}`" for c in columns]), _post_fn(p, columns, {})
    fields = _first_fields(files[0], p)
    if not fields:
        raise InvalidArgumentError("file_path", files[0], "CSV files with at least one "
                                   "column (pandas: 'No columns to parse from file')")
    # every column a string, under a name of ours: the header line only names them
    schema = StructType([StructField(f"_c{i}", StringType()) for i in range(len(fields))])
    sdf = reader.schema(schema).csv(files)
    chosen = _labels_and_selection(p, fields)
    columns = []
    for source, label in chosen:
        position = int(source[2:])
        na = p.na_by_column.get(label, p.na_tokens) if p.na_filter else frozenset()
        if label in p.converters or (position in p.converters and not isinstance(label, int)):
            mode = "raw"
        elif _is_string_dtype(_column_dtype(p, label, position)):
            mode = "string"
        else:
            mode = "infer"
        columns.append(_Column(source, label, mode, na))
    kinds = _infer(sdf, p, columns)
    exprs = [f"{_typed(p, c, kinds.get(i))} AS `c{i}`" for i, c in enumerate(columns)]
    return sdf.selectExpr(*exprs), _post_fn(p, columns, kinds)


def _value(c: _Column) -> str:
    # Spark reads an empty field as null, and a CSV has no other null: back to "", so
    # that pandas' tokens decide what is missing ("" is one of its defaults)
    col = f"coalesce(`{c.source}`, '')"
    if not c.na:
        return col
    return f"(CASE WHEN {_in(col, c.na)} THEN NULL ELSE {col} END)"


def _numeric_text(p: CsvPlan, v: str, decimal: bool) -> str:
    if p.thousands:
        v = f"replace({v}, {_sql_str(p.thousands)}, '')"
    if decimal and p.decimal != ".":
        v = f"replace({v}, {_sql_str(p.decimal)}, '.')"
    return v


def _infer(sdf, p: CsvPlan, columns: List[_Column]) -> Dict[int, str]:
    """pandas' dtype of each inferred column, from one aggregate over every row."""
    aggs = ["count(1) AS total"]
    todo = [i for i, c in enumerate(columns) if c.mode == "infer"]
    for i in todo:
        v = _value(columns[i])
        as_int = _numeric_text(p, v, decimal=False)
        as_float = _numeric_text(p, v, decimal=True)
        aggs += [
            f"count({v}) AS v{i}",
            f"count_if({as_int} RLIKE {_sql_str(_INT_RE)} AND "
            f"try_cast(trim({as_int}) AS BIGINT) IS NOT NULL) AS i{i}",
            f"count_if(lower({as_float}) RLIKE {_sql_str(_FLOAT_RE)}) AS f{i}",
            f"count_if({_in(v, set(p.true_values) | set(p.false_values))}) AS b{i}",
        ]
    if len(aggs) == 1:
        # still parse every row, so that a malformed file fails now
        aggs += [f"count(`{c.source}`) AS x{i}" for i, c in enumerate(columns)]
    row = sdf.selectExpr(*aggs).collect()[0].asDict()
    total = row["total"]
    kinds = {}
    for i in todo:
        values, missing = row[f"v{i}"], total - row[f"v{i}"]
        if values == 0:
            kinds[i] = "float" if total else "string"
        elif row[f"i{i}"] == values:
            kinds[i] = "int" if missing == 0 else "float"
        elif row[f"f{i}"] == values:
            kinds[i] = "float"
        elif row[f"b{i}"] == values:
            kinds[i] = "bool" if missing == 0 else "nullable_bool"
        else:
            kinds[i] = "string"
    return kinds


def _typed(p: CsvPlan, c: _Column, kind: Optional[str]) -> str:
    if c.mode == "raw":
        return f"coalesce(`{c.source}`, '')"
    v = _value(c)
    if kind == "int":
        return f"CAST(trim({_numeric_text(p, v, False)}) AS BIGINT)"
    if kind == "float":
        return f"CAST(trim({_numeric_text(p, v, True)}) AS DOUBLE)"
    if kind in ("bool", "nullable_bool"):
        return f"(CASE WHEN {v} IS NULL THEN NULL ELSE {_in(v, p.true_values)} END)"
    return v


def _post_fn(p: CsvPlan, columns: List[_Column], kinds: Dict[int, str]):
    labels = [c.label for c in columns]
    raw = [c.label for c in columns if c.mode == "raw"]
    converters = {c.label: p.converters.get(c.label, p.converters.get(i))
                  for i, c in enumerate(columns) if c.mode == "raw"}
    del raw
    # columns read as strings are already what a str dtype makes (astype(str) would
    # turn the missing values into the string "nan")
    dtype = {c.label: _column_dtype(p, c.label, i) for i, c in enumerate(columns)
             if _column_dtype(p, c.label, i) is not None and c.mode != "raw"
             and not _is_plain_str(_column_dtype(p, c.label, i))}
    return functools.partial(_post, labels, converters, dtype, p.parse_dates,
                             dict(p.date_kwargs), p.index_col)


def _is_object(dtype) -> bool:
    return dtype.kind == "O"


def _post(labels, converters, dtype, parse_dates, date_kwargs, index_col, df):
    """On each shard: pandas' column names, then what read_csv does after parsing."""
    import numpy as np
    import pandas as pd
    df.columns = labels
    for col in df.columns[df.dtypes.map(_is_object)]:
        if col not in converters:
            df[col] = df[col].where(df[col].notna(), np.nan)  # pandas reads NaN, not None
    for col, fn in converters.items():
        df[col] = [fn("" if v is None else v) for v in df[col]]
    if dtype:
        df = df.astype(dtype)
    if parse_dates is not None and parse_dates is not True:
        for col in parse_dates:
            name = col if col in df.columns else labels[col] if isinstance(col, int) else col
            try:
                df[name] = pd.to_datetime(df[name], **date_kwargs)
            except (ValueError, TypeError):
                pass  # pandas leaves a column it cannot parse as it was
    if index_col is not None:
        cols = index_col if isinstance(index_col, (list, tuple)) else [index_col]
        keys = [df.columns[c] if isinstance(c, int) and c not in df.columns else c
                for c in cols]
        df = df.set_index(keys if isinstance(index_col, (list, tuple)) else keys[0])
        if parse_dates is True:
            try:
                df.index = pd.to_datetime(df.index, **date_kwargs)
            except (ValueError, TypeError):
                pass
    return df

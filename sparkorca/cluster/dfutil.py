"""TensorFlowOnSpark's ``dfutil``: Spark DataFrames to and from TFRecord files of
``tf.train.Example``, written and read by the executors.

    from sparkorca.cluster import dfutil
    dfutil.saveAsTFRecords(df, "hdfs:///data/mnist/tfr/train")   # part-r-00000, ...
    df = dfutil.loadTFRecords(sc, "hdfs:///data/mnist/tfr/train", binary_features=["img"])

The files are ordinary TFRecord files (``tf.data.TFRecordDataset`` reads them), one
``part-r-NNNNN`` per partition plus an empty ``_SUCCESS``, as TFoS wrote them through
Hadoop. No Hadoop jar is needed: the paths go through fsspec (local paths, ``file://``,
and ``s3://``, ``hdfs://``, ``gs://`` ... where fsspec has the backend).

Type mapping (TFoS's): float, double -> float_list (float32: precision is lost);
boolean, tinyint, smallint, int, bigint -> int64_list; string, binary -> bytes_list;
arrays of those numbers -> float_list / int64_list. Loading infers the schema from the
first record: int64 -> bigint, float -> double, bytes -> string (binary when named in
``binary_features``), more than one value -> an array of that, no value -> string.

Where sparkorca differs from TFoS, and why:

- An unsupported column type, a ``df`` that is no DataFrame, an ``output_dir`` that
  exists, a missing or empty ``input_dir`` fail on the driver before any job, naming the
  column or the path (TFoS failed inside the job or with an IndexError).
- A null cell fails the save naming the column (TFoS failed deep in protobuf, and wrote
  a null string as "None"); the half-written ``output_dir`` is removed.
- Loading converts every record to the schema of the first: an array column whose value
  has one element stays a one-element array, a missing feature is null, a feature the
  first record lacks is dropped, and a value that does not fit (several values in a
  scalar column, ints where the first record had floats) fails naming the feature (TFoS
  gave scalars for one-element lists, which Spark then refused).
- Bytes that are not UTF-8 in a column not named in ``binary_features`` fail on the
  driver when the first record shows it, with the fix; several values of a string
  feature load as an array of strings (TFoS kept the first only).
- ``toTFExample``'s function and ``fromTFExample`` are lazy generators (TFoS built a
  list of the whole partition).
- ``loadedDF`` holds the loaded frames weakly: a frame nobody uses any more is dropped
  from it (TFoS's dict kept every one for the life of the driver).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import struct
import tempfile
import uuid
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Collection,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from ..errors import InvalidArgumentError, OrcaRuntimeError

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

#: Every DataFrame loadTFRecords returned and is still alive -> its input_dir (TFoS's
#: ``loadedDF``). Weak, so the registry never keeps a frame alive.
loadedDF: "weakref.WeakKeyDictionary[DataFrame, str]" = weakref.WeakKeyDictionary()

PART_NAME = "part-r-{:05d}"  # Hadoop's name for the output of reduce task N, as TFoS wrote
SUCCESS_MARKER = "_SUCCESS"

# df.dtypes simple strings -> the tf.train.Feature list that holds them.
_INT64 = ("boolean", "tinyint", "smallint", "int", "bigint", "long")
_FLOAT = ("float", "double")
_COLUMN_KINDS = {
    **{t: "int64" for t in _INT64},
    **{t: "float" for t in _FLOAT},
    "string": "string",
    "binary": "binary",
    **{f"array<{t}>": "int64_array" for t in _INT64},
    **{f"array<{t}>": "float_array" for t in _FLOAT},
}
_SUPPORTED = ", ".join(_COLUMN_KINDS)


def isLoadedDF(df: Any) -> bool:
    """Whether ``df`` is a DataFrame that :func:`loadTFRecords` returned (that very
    object, or another name for it; a frame derived from it by filter, select ... is not).

    Examples
    --------
    >>> df = loadTFRecords(sc, "/data/tfr")
    >>> isLoadedDF(df), isLoadedDF(df.filter("label > 0"))
    (True, False)
    """
    try:
        return df in loadedDF
    except TypeError:  # not weak-referenceable or unhashable: never a loaded frame
        return False


def saveAsTFRecords(df: "DataFrame", output_dir: str) -> None:
    """Write ``df`` as TFRecord files of ``tf.train.Example``, one ``part-r-NNNNN`` per
    partition under ``output_dir`` (which must not exist yet), then ``_SUCCESS``.

    Each row becomes one Example with a feature per column (see the module's type
    mapping). The executors write the files, so ``output_dir`` must be a path they
    reach: a shared filesystem, an object store, HDFS; a local path is on each host.

    Examples
    --------
    >>> df = spark.createDataFrame([([0, 255, 3], 1)], "image array<bigint>, label bigint")
    >>> saveAsTFRecords(df, "/tmp/tfr")
    >>> sorted(os.listdir("/tmp/tfr"))
    ['_SUCCESS', 'part-r-00000']
    """
    from pyspark.sql import DataFrame
    if not isinstance(df, DataFrame):
        raise InvalidArgumentError("df", _short(df), "a pyspark.sql.DataFrame")
    _not_over_connect("saveAsTFRecords")
    to_examples = toTFExample(df.dtypes)  # refuses unsupported columns before any job
    fs, root = _filesystem("output_dir", output_dir)
    if fs.exists(root):
        raise InvalidArgumentError("output_dir", output_dir, "a path that does not exist yet",
                                   hint="saveAsTFRecords never writes over files, as "
                                        "Hadoop's output formats; remove it or pick another")
    fs.makedirs(root)
    # Executors get an absolute URL: a relative local path means the driver's directory.
    url = fs.unstrip_protocol(root)
    from ..data.shards import run_job
    try:
        run_job(f"saveAsTFRecords(output_dir={output_dir!r})",
                df.rdd.mapPartitions(to_examples)
                      .mapPartitionsWithIndex(functools.partial(_write_part, url)).collect)
    except BaseException:
        with contextlib.suppress(OSError):  # the job's error matters, not this one's
            fs.rm(root, recursive=True)  # no half-written output: it did not exist before
        raise
    fs.touch(posixpath.join(root, SUCCESS_MARKER))


def loadTFRecords(sc: "SparkContext", input_dir: str,
                  binary_features: Collection[str] = ()) -> "DataFrame":
    """A DataFrame of the ``tf.train.Example`` records in the TFRecord files under
    ``input_dir`` (a directory, a file or a glob; names starting with ``_`` or ``.``
    are skipped), one partition per file, read by the executors.

    The schema comes from the first record: columns sorted by feature name, int64 ->
    bigint, float -> double, bytes -> string or, for the features named in
    ``binary_features``, binary; a feature with several values -> an array of those.

    Examples
    --------
    >>> df = loadTFRecords(sc, "/tmp/tfr")
    >>> df.dtypes
    [('image', 'array<bigint>'), ('label', 'bigint')]
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    from ..data.paths import expand_paths
    _not_over_connect("loadTFRecords")
    if not isinstance(sc, SparkContext):
        raise InvalidArgumentError("sc", _short(sc), "a pyspark.SparkContext")
    binary = _names("binary_features", binary_features)
    _filesystem("input_dir", input_dir)
    urls = expand_paths(os.fspath(input_dir), "loadTFRecords")
    first = _first_record(urls)
    if first is None:
        raise InvalidArgumentError("input_dir", input_dir,
                                   "TFRecord files holding at least one record",
                                   hint="The schema is inferred from the first record; "
                                        f"the {len(urls)} file(s) there are all empty")
    url, example = first
    schema = infer_schema(example, binary)
    absent = sorted(set(binary) - set(schema.names))
    if absent:
        log.warning("loadTFRecords: binary_features %s are not features of the first record "
                    "in %s (features: %s)", absent, url, schema.names)
    _row_values(example, schema, source=url)  # a wrong hint fails here, before the job
    rows = sc.parallelize(urls, len(urls)).mapPartitions(
        functools.partial(_read_rows, schema))
    df = SparkSession.builder.getOrCreate().createDataFrame(rows, schema)
    loadedDF[df] = os.fspath(input_dir)
    return df


def toTFExample(dtypes: Sequence[Tuple[str, str]]):
    """A ``mapPartitions`` function from Rows of a DataFrame with these ``dtypes``
    (``df.dtypes``) to ``(bytearray(serialized tf.train.Example), None)`` pairs.

    Columns of a type TFRecords cannot hold are refused here, naming them.

    Examples
    --------
    >>> records = df.rdd.mapPartitions(toTFExample(df.dtypes))
    """
    if isinstance(dtypes, (str, bytes)) or not isinstance(dtypes, Iterable):
        raise InvalidArgumentError("dtypes", _short(dtypes), "df.dtypes: (column, type) pairs")
    columns: List[Tuple[str, str]] = []
    for pair in dtypes:
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str)
                                                                   for p in pair)):
            raise InvalidArgumentError("dtypes", _short(dtypes),
                                       "df.dtypes: (column, type) pairs")
        name, dtype = pair
        if dtype not in _COLUMN_KINDS:
            raise InvalidArgumentError(
                f"column {name!r} of type", dtype, f"a type TFRecords hold: {_SUPPORTED}",
                hint=f"Cast it to one, e.g. df.withColumn({name!r}, df[{name!r}]"
                     ".cast('double')), or drop it")
        columns.append((name, dtype))
    return functools.partial(_to_examples, tuple(columns))


def infer_schema(example: Any, binary_features: Collection[str] = ()) -> StructType:
    """The Spark schema of one ``tf.train.Example``: a nullable field per feature,
    sorted by name (see :func:`loadTFRecords` for the types)."""
    binary = _names("binary_features", binary_features)
    features = _features("example", example)
    return StructType([StructField(name, _infer_type(name, feature, binary), True)
                       for name, feature in sorted(features.items())])


def fromTFExample(iter: Iterable[Any], binary_features: Collection[str] = ()) -> Iterator[Any]:
    """A ``mapPartitions`` function from serialized ``tf.train.Example`` records
    (``(bytes, None)`` pairs as TFoS read them, or plain bytes) to Rows, fields sorted by
    feature name, each typed as :func:`infer_schema` types that one record.

    Examples
    --------
    >>> list(fromTFExample([(example.SerializeToString(), None)]))
    [Row(label=1, name='a')]
    """
    from pyspark.sql import Row
    binary = _names("binary_features", binary_features)
    example_class = _example_class()
    for record in iter:
        example = example_class.FromString(bytes(_serialized(record)))
        schema = infer_schema(example, binary)
        yield Row(**dict(zip(schema.names, _row_values(example, schema))))


def _not_over_connect(api: str) -> None:
    from ..context import refuse_over_connect
    refuse_over_connect(f"dfutil.{api}", "read and write TFRecords with a Spark TFRecord "
                        "data source on the server (spark-tfrecord's format('tfrecord')), or "
                        "from a mapInArrow UDF")


# --- executor side -------------------------------------------------------------------

def _to_examples(columns: Tuple[Tuple[str, str], ...], rows: Iterable[Any]
                 ) -> Iterator[Tuple[bytearray, None]]:
    from pyspark.sql import Row
    example_class = _example_class()
    for row in rows:
        example = example_class()
        feature = example.features.feature
        named = isinstance(row, Row)
        for i, (name, dtype) in enumerate(columns):
            value = row[name] if named else row[i]
            if value is None:
                raise InvalidArgumentError(
                    f"column {name!r}", None,
                    "a value in every row: a tf.train.Example has no null",
                    hint="Fill or drop the nulls first (df.na.fill / df.na.drop)")
            try:
                _put(feature[name], _COLUMN_KINDS[dtype], value)
            except (TypeError, ValueError) as e:  # a null or odd value inside an array
                raise InvalidArgumentError(f"column {name!r}", _short(value),
                                           f"{dtype} values without nulls ({e})") from None
        yield bytearray(example.SerializeToString()), None


def _put(feature: Any, kind: str, value: Any) -> None:
    if kind == "int64":
        feature.int64_list.value.append(int(value))
    elif kind == "float":
        feature.float_list.value.append(value)
    elif kind == "string":
        feature.bytes_list.value.append(str(value).encode("utf-8"))
    elif kind == "binary":
        feature.bytes_list.value.append(bytes(value))
    elif kind == "int64_array":
        feature.int64_list.value.extend([int(v) for v in value])
    else:  # float_array
        feature.float_list.value.extend(value)


def _write_part(output_url: str, index: int, records: Iterable[Any]
                ) -> Iterator[Tuple[str, int]]:
    """Write one partition's records as ``part-r-{index}`` under ``output_url``.

    TensorFlow's own TFRecordWriter does the framing (length, masked CRC-32C of it, data,
    masked CRC-32C of that): no CRC-32C package is needed and the files are exactly what
    TF writes. It writes local files only (and the few filesystems TF has built in), so
    for any other filesystem it writes a local temp file that fsspec then uploads.
    """
    fs, root = _url_to_fs(output_url)
    name = PART_NAME.format(index)
    target = posixpath.join(root, name)
    if _is_local(fs):
        os.makedirs(root, exist_ok=True)
        # A hidden name until complete: readers skip it, and a failed or speculative
        # attempt never leaves a truncated part file behind.
        partial = os.path.join(root, f".{name}.{uuid.uuid4().hex}.partial")
        try:
            count = _write_tfrecords(partial, records)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    else:
        fd, partial = tempfile.mkstemp(prefix="sparkorca-tfrecord-")
        os.close(fd)
        try:
            count = _write_tfrecords(partial, records)
            fs.makedirs(root, exist_ok=True)
            fs.put_file(partial, target)
        finally:
            os.remove(partial)
    yield name, count


def _write_tfrecords(path: str, records: Iterable[Any]) -> int:
    import tensorflow as tf
    count = 0
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(bytes(_serialized(record)))
            count += 1
    return count


def _read_rows(schema: StructType, urls: Iterable[str]) -> Iterator[Tuple[Any, ...]]:
    """The rows (tuples in ``schema`` order) of the TFRecord files at ``urls``."""
    example_class = _example_class()
    for url in urls:
        for data in _records(url):
            yield _row_values(example_class.FromString(data), schema, source=url)


def _records(url: str) -> Iterator[bytes]:
    """The records of one TFRecord file, read by TensorFlow (which checks every CRC);
    a file TF cannot open directly is first copied to a local temp file by fsspec."""
    fs, path = _url_to_fs(url)
    if _is_local(fs):
        yield from _tf_records(url, path)
        return
    fd, local = tempfile.mkstemp(prefix="sparkorca-tfrecord-")
    os.close(fd)
    try:
        fs.get_file(path, local)
        yield from _tf_records(url, local)
    finally:
        os.remove(local)


def _tf_records(url: str, path: str) -> Iterator[bytes]:
    import tensorflow as tf
    try:
        for record in tf.data.TFRecordDataset(path):
            yield record.numpy()
    except tf.errors.OpError as e:
        raise OrcaRuntimeError(f"{url} is not a readable TFRecord file: {e.message}") from None


# --- conversions ---------------------------------------------------------------------

_LIST_OF = {LongType: "int64_list", DoubleType: "float_list", StringType: "bytes_list",
            BinaryType: "bytes_list"}


def _infer_type(name: str, feature: Any, binary: frozenset) -> DataType:
    if name in binary:
        return BinaryType()
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else ()
    base: DataType
    if kind == "int64_list" and values:
        base = LongType()
    elif kind == "float_list" and values:
        base = DoubleType()
    else:  # bytes, or no value at all (TFoS: string)
        base = StringType()
    return ArrayType(base) if len(values) > 1 else base


def _row_values(example: Any, schema: StructType, source: str = "a record") -> Tuple[Any, ...]:
    """The values of ``example`` in ``schema``'s order, each converted to its field's type."""
    features = example.features.feature
    return tuple(_value(field.name, features[field.name], field.dataType, source)
                 if field.name in features else None for field in schema.fields)


def _value(name: str, feature: Any, dtype: DataType, source: str) -> Any:
    is_array = isinstance(dtype, ArrayType)
    base = dtype.elementType if isinstance(dtype, ArrayType) else dtype
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else ()
    expected = _LIST_OF[type(base)]
    if values and kind != expected:
        raise _mismatch(name, f"a {kind}", f"a {expected} (the column is {dtype.simpleString()})",
                        source)
    if isinstance(base, BinaryType):
        if len(values) > 1:
            raise _mismatch(name, f"{len(values)} bytes values",
                            "one (a binary column holds one bytes value)", source)
        return bytearray(values[0]) if values else None
    if isinstance(base, StringType):
        try:
            values = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"feature {name!r} in {source}", "bytes that are not UTF-8",
                "text, for a string column",
                hint=f"Name it in binary_features (binary_features=[{name!r}]) to load it as "
                     "a binary column") from None
    if is_array:
        return list(values)
    if len(values) > 1:
        raise _mismatch(name, f"{len(values)} values",
                        f"one (the first record had one, so the column is {dtype.simpleString()})",
                        source)
    return values[0] if values else None


def _mismatch(name: str, found: str, expected: str, source: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"feature {name!r} in {source}", found, expected,
                                hint="loadTFRecords gives every record the schema of the "
                                     "first")


# --- helpers -------------------------------------------------------------------------

def _first_record(urls: Sequence[str]) -> Optional[Tuple[str, Any]]:
    """The first ``tf.train.Example`` of the first non-empty file, read on the driver.

    Only its framing is parsed here (uint64 length, uint32 CRC, data): TF checks the
    CRCs when the executors read the files, and this works on any fsspec filesystem.
    """
    example_class = _example_class()
    for url in urls:
        fs, path = _url_to_fs(url)
        size = fs.size(path)
        if not size:
            continue
        with fs.open(path, "rb") as f:
            header = f.read(12)
            length = struct.unpack("<Q", header[:8])[0] if len(header) == 12 else -1
            if not 0 <= length <= size - 16:
                raise OrcaRuntimeError(f"{url} is not a TFRecord file: its first record's "
                                       f"length does not fit in its {size} bytes")
            data = f.read(length)
        try:
            return url, example_class.FromString(data)
        except Exception as e:  # protobuf's DecodeError
            raise OrcaRuntimeError(f"{url} does not hold tf.train.Example records: {e}") \
                from None
    return None


def _filesystem(param: str, path: Any) -> Tuple[Any, str]:
    """The fsspec filesystem and path of ``path``, or an error naming ``param``."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path.strip():
        raise InvalidArgumentError(param, _short(path), "a path or URL (local, file://, or a "
                                   "filesystem fsspec reaches: s3://, hdfs://, gs:// ...)")
    try:
        return _url_to_fs(path)
    except (ImportError, ValueError) as e:
        raise InvalidArgumentError(param, path, "a path on a filesystem fsspec can reach",
                                   hint=str(e)) from None


def _url_to_fs(url: str) -> Tuple[Any, str]:
    import fsspec
    return fsspec.core.url_to_fs(url)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem
    return isinstance(fs, LocalFileSystem)


def _names(param: str, value: Any) -> frozenset:
    """A collection of feature names (TFoS tested ``name in value``, which for a str
    would match substrings)."""
    if value is None:
        return frozenset()
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str)
                                                                for v in value):
        return frozenset(value)
    raise InvalidArgumentError(param, _short(value), "a list of feature names")


def _features(param: str, example: Any) -> Any:
    features = getattr(getattr(example, "features", None), "feature", None)
    if features is None:
        raise InvalidArgumentError(param, _short(example), "a tf.train.Example")
    return features


def _serialized(record: Any) -> Any:
    """A record's serialized Example: TFoS's ``(bytes, None)`` pair or the bytes alone."""
    return record[0] if isinstance(record, tuple) else record


def _example_class() -> Any:
    import tensorflow as tf
    return tf.train.Example


def _short(value: Any) -> Any:
    """``value`` itself for the error message, or its type when its repr is long."""
    return value if len(repr(value)) <= 80 else f"<a {type(value).__qualname__}>"


__all__ = ["saveAsTFRecords", "loadTFRecords", "isLoadedDF", "toTFExample", "fromTFExample",
           "infer_schema", "loadedDF"]

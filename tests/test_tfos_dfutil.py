"""dfutil on real Spark (local-cluster[2,1,1024]) and real TensorFlow: DataFrames to
TFRecord files of tf.train.Example and back, as TensorFlowOnSpark's dfutil."""

import contextlib
import gc
import os
import re
import uuid
import weakref

import pytest
from conftest import QUIET, shared_context
from pyspark.sql import Row
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from sparkorca.cluster import dfutil
from sparkorca.errors import InvalidArgumentError, MissingPathError, OrcaRuntimeError

pytestmark = pytest.mark.engine

# The TFCluster/TFoS modules' one context (conftest keeps it up between them).
shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)

# Every type TFoS round-trips. The arrays of the first row have several elements (the
# schema comes from the first record); later rows have one-element arrays.
SCHEMA = ("s string, i int, l bigint, la array<bigint>, ia array<int>, d double, f float, "
          "da array<double>, fa array<float>, b binary, flag boolean")
ROWS = [
    ("text string", 1, 2 ** 40, [2, 3, 4, 5], [7, 8], -1.1, 0.5, [-2.2, -3.3, -4.4, -5.5],
     [1.5, 2.5], bytearray(b"\xff\xfe\xfd\xfc"), True),
    ("ünïcode ✓", -7, -(2 ** 62), [9], [-1], 3.25, -0.125, [1e10], [0.25],
     bytearray(b"\x00\x01"), False),
    ("", 0, 5, [0, 1], [4, 4, 4], 1e-3, 2.0, [7.0, 8.0], [3.0, 4.0], bytearray(b""), True),
]
LOADED_TYPES = {"s": StringType(), "i": LongType(), "l": LongType(), "la": ArrayType(LongType()),
                "ia": ArrayType(LongType()), "d": DoubleType(), "f": DoubleType(),
                "da": ArrayType(DoubleType()), "fa": ArrayType(DoubleType()),
                "b": BinaryType(), "flag": LongType()}


@pytest.fixture
def sc(shared_sc):
    return shared_sc


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf
    return tf


@pytest.fixture(scope="module")
def spark(shared_sc):
    from pyspark.sql import SparkSession
    return SparkSession.builder.getOrCreate()


@pytest.fixture(scope="module")
def saved(shared_sc, spark, tmp_path_factory):
    """ROWS saved once for the module: (the DataFrame, its output dir)."""
    df = spark.createDataFrame(ROWS, SCHEMA)
    out = tmp_path_factory.mktemp("dfutil") / "tfr"
    dfutil.saveAsTFRecords(df, str(out))
    return df, out


@contextlib.contextmanager
def jobs_started(sc):
    """The ids of the Spark jobs started inside the block (a job group of its own)."""
    group = f"dfutil-test-{uuid.uuid4().hex}"
    sc.setJobGroup(group, "dfutil test")
    ids: list = []
    try:
        yield ids
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            sc.setLocalProperty(key, None)
        ids.extend(sc.statusTracker().getJobIdsForGroup(group))


def parse_all(tf, files):
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def assert_row_equal(got, want):
    for name, g, w in zip(got.__fields__, got, want):
        if isinstance(w, float):
            assert g == pytest.approx(w, rel=1e-6), name  # stored as float32
        elif isinstance(w, list) and w and isinstance(w[0], float):
            assert g == pytest.approx(w, rel=1e-6), name
        elif isinstance(w, bool):
            assert g == int(w) and type(g) is int, name
        else:
            assert g == w, name


def test_save_writes_one_plain_tfrecord_file_per_partition(saved, tf):
    df, out = saved
    parts = [f"part-r-{i:05d}" for i in range(df.rdd.getNumPartitions())]
    assert sorted(os.listdir(out)) == ["_SUCCESS", *parts]
    # TensorFlow alone reads them: standard framing, every CRC checked, Examples inside.
    examples = parse_all(tf, [str(out / p) for p in parts])
    assert len(examples) == len(ROWS)
    first = next(e.features.feature for e in examples
                 if e.features.feature["s"].bytes_list.value == [b"text string"])
    assert first["l"].int64_list.value == [2 ** 40]
    assert first["la"].int64_list.value == [2, 3, 4, 5]
    assert first["d"].float_list.value == pytest.approx([-1.1])
    assert first["da"].float_list.value == pytest.approx([-2.2, -3.3, -4.4, -5.5])
    assert first["b"].bytes_list.value == [b"\xff\xfe\xfd\xfc"]
    assert first["flag"].int64_list.value == [1]


def test_every_type_round_trips(saved, sc):
    _, out = saved
    loaded = dfutil.loadTFRecords(sc, str(out), binary_features=["b"])
    assert loaded.schema == StructType([StructField(n, t) for n, t in
                                        sorted(LOADED_TYPES.items())])
    assert loaded.rdd.getNumPartitions() == 2  # one per part file
    got = {row.l: row for row in loaded.collect()}
    assert set(got) == {r[2] for r in ROWS}
    names = SCHEMA.replace(",", "").split()[::2]
    for want in ROWS:
        row = got[want[2]]
        assert_row_equal(Row(**{n: row[n] for n in names}), want)
    assert bytes(got[2 ** 40].b) == b"\xff\xfe\xfd\xfc"
    assert got[-(2 ** 62)].fa == [0.25]  # a one-element array stays an array


def test_bytes_load_as_string_unless_named_in_binary_features(saved, sc):
    _, out = saved
    with jobs_started(sc) as jobs, pytest.raises(InvalidArgumentError) as err:
        dfutil.loadTFRecords(sc, str(out))
    assert "'b'" in str(err.value) and "binary_features=['b']" in str(err.value)
    assert jobs == []


def test_files_written_by_tensorflow_load(sc, tf, tmp_path):
    def example(i):
        f = tf.train.Feature
        return tf.train.Example(features=tf.train.Features(feature={
            "label": f(int64_list=tf.train.Int64List(value=[i])),
            "image": f(int64_list=tf.train.Int64List(value=[i, 255, 0, 7])),
            "name": f(bytes_list=tf.train.BytesList(value=[f"n{i}".encode()])),
            "weights": f(float_list=tf.train.FloatList(value=[i / 2, 1.0])),
        }))
    (tmp_path / "empty").touch()  # an empty partition's file
    (tmp_path / "_SUCCESS").touch()
    for part, ids in (("a.tfrecord", range(3)), ("b.tfrecord", range(3, 5))):
        with tf.io.TFRecordWriter(str(tmp_path / part)) as w:
            for i in ids:
                w.write(example(i).SerializeToString())
    loaded = dfutil.loadTFRecords(sc, f"file://{tmp_path}")
    assert loaded.dtypes == [("image", "array<bigint>"), ("label", "bigint"), ("name", "string"),
                             ("weights", "array<double>")]
    assert sorted(loaded.collect()) == [Row(image=[i, 255, 0, 7], label=i, name=f"n{i}",
                                            weights=[i / 2, 1.0]) for i in range(5)]


def test_isLoadedDF_is_true_only_for_the_loaded_frame_itself(saved, sc, spark, monkeypatch):
    _, out = saved
    monkeypatch.chdir(out.parent)  # a relative path is the driver's
    loaded = dfutil.loadTFRecords(sc, out.name, binary_features=["b"])
    alias = loaded
    assert dfutil.isLoadedDF(loaded) and dfutil.isLoadedDF(alias)
    assert dfutil.loadedDF[loaded] == out.name
    assert not dfutil.isLoadedDF(loaded.filter("i > 0"))
    assert not dfutil.isLoadedDF(loaded.select("s"))
    assert not dfutil.isLoadedDF(spark.createDataFrame(ROWS, SCHEMA))
    assert not dfutil.isLoadedDF("a string") and not dfutil.isLoadedDF([loaded])
    alias = alias.filter("i > 0")  # the name now means a derived frame
    assert not dfutil.isLoadedDF(alias)
    # The registry does not keep a frame alive.
    gone = weakref.ref(loaded)
    del loaded
    gc.collect()
    assert gone() is None
    assert all(v != out.name for v in dfutil.loadedDF.values())


def test_bad_input_fails_before_any_job(saved, sc, spark, tmp_path):
    df, out = saved
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty_files").mkdir()
    (tmp_path / "empty_files" / "part-r-00000").touch()
    with jobs_started(sc) as jobs:
        with pytest.raises(InvalidArgumentError, match=r"^df=\[1, 2\]"):
            dfutil.saveAsTFRecords([1, 2], str(tmp_path / "x"))
        for column, dtype in (("price", "decimal(10,2)"), ("tags", "array<string>"),
                              ("day", "date")):
            bad = spark.createDataFrame([], f"s string, {column} {dtype}")
            expected = f"column {column!r} of type={re.escape(repr(dtype))}"
            with pytest.raises(InvalidArgumentError, match=expected):
                dfutil.saveAsTFRecords(bad, str(tmp_path / column))
            assert not (tmp_path / column).exists()
        with pytest.raises(InvalidArgumentError, match="output_dir=.*does not exist yet"):
            dfutil.saveAsTFRecords(df, str(out))
        with pytest.raises(MissingPathError, match="nowhere"):
            dfutil.loadTFRecords(sc, str(tmp_path / "nowhere"))
        with pytest.raises(MissingPathError, match="empty_dir"):
            dfutil.loadTFRecords(sc, str(tmp_path / "empty_dir"))
        with pytest.raises(InvalidArgumentError, match="input_dir=.*empty_files.*at least one"):
            dfutil.loadTFRecords(sc, str(tmp_path / "empty_files"))
        with pytest.raises(InvalidArgumentError, match="^sc="):
            dfutil.loadTFRecords("local", str(out))
        with pytest.raises(InvalidArgumentError, match="^binary_features='b'"):
            dfutil.loadTFRecords(sc, str(out), binary_features="b")
    assert jobs == []


def test_a_null_fails_the_save_naming_the_column_and_leaves_no_output(sc, spark, tmp_path):
    df = spark.createDataFrame([(1, "a"), (2, None)], "n bigint, word string")
    with jobs_started(sc) as jobs, pytest.raises(OrcaRuntimeError) as err:
        dfutil.saveAsTFRecords(df, str(tmp_path / "out"))
    assert "column 'word'=None" in str(err.value)
    assert jobs  # the probe sees jobs: the checks above that saw none could have failed
    assert not (tmp_path / "out").exists()


# --- the pure functions, on single Examples (TF only, no Spark job) ---------------------

def test_toTFExample_infer_schema_and_fromTFExample_on_one_example(tf):
    dtypes = [("name", "string"), ("n", "int"), ("xs", "array<float>"), ("raw", "binary"),
              ("one", "array<bigint>")]
    rows = [Row(name="a", n=3, xs=[0.5, 1.5], raw=bytearray(b"\x80"), one=[4])]
    records = list(dfutil.toTFExample(dtypes)(rows))
    assert [r[1] for r in records] == [None] and isinstance(records[0][0], bytearray)
    example = tf.train.Example.FromString(bytes(records[0][0]))
    assert example.features.feature["xs"].float_list.value == [0.5, 1.5]
    assert dfutil.infer_schema(example, ["raw"]) == StructType([
        StructField("n", LongType()), StructField("name", StringType()),
        StructField("one", LongType()),  # one value: a scalar, as TFoS infers it
        StructField("raw", BinaryType()), StructField("xs", ArrayType(DoubleType()))])
    # TFoS's (bytes, None) records and bare bytes alike.
    got = list(dfutil.fromTFExample([records[0], bytes(records[0][0])], ["raw"]))
    assert got == [Row(n=3, name="a", one=4, raw=bytearray(b"\x80"), xs=[0.5, 1.5])] * 2
    with pytest.raises(InvalidArgumentError, match="feature 'raw'.*binary_features"):
        list(dfutil.fromTFExample(records))
    # A tuple row is read by position.
    assert list(dfutil.toTFExample([("a", "bigint")])([(5,)]))[0][0] == \
        bytearray(tf.train.Example(features=tf.train.Features(feature={
            "a": tf.train.Feature(int64_list=tf.train.Int64List(value=[5]))}))
            .SerializeToString())
    with pytest.raises(InvalidArgumentError, match="column 'm' of type='map<string,int>'"):
        dfutil.toTFExample([("a", "int"), ("m", "map<string,int>")])
    with pytest.raises(InvalidArgumentError, match="^example="):
        dfutil.infer_schema(b"not an example")


def test_other_fsspec_filesystems_go_through_a_local_temp_file(tf, tmp_path):
    """Not local: TF writes a temp file that fsspec uploads, and reads a downloaded copy
    (fsspec's in-memory filesystem stands in for s3/hdfs; the leak check covers temps)."""
    import fsspec
    memory = fsspec.filesystem("memory")
    root = f"memory://dfutil-{uuid.uuid4().hex}/out"
    try:
        records = dfutil.toTFExample([("k", "bigint"), ("v", "array<double>")])(
            [Row(k=k, v=[k, 0.5]) for k in range(3)])
        assert list(dfutil._write_part(root, 7, records)) == [("part-r-00007", 3)]
        part = f"{root}/part-r-00007"
        local = tmp_path / "copy"
        local.write_bytes(memory.cat(part))
        assert [e.features.feature["k"].int64_list.value[0]
                for e in parse_all(tf, [str(local)])] == [0, 1, 2]
        url, first = dfutil._first_record([part])
        schema = dfutil.infer_schema(first)
        assert list(dfutil._read_rows(schema, [part])) == [(k, [k, 0.5]) for k in range(3)]
    finally:
        memory.rm(root.split("/out")[0], recursive=True)

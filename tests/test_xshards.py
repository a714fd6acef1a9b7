"""Orca's data API (XShards, readers, SharedValue, transformer, file helpers) on real
Spark, with files the tests write. One Spark application serves the module."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca import OrcaContext
from sparkorca.data import Shards, SharedValue, SparkXShards, XShards, _kinds, file
from sparkorca.data.pandas import read_csv, read_json, read_parquet
from sparkorca.data.transformer import MinMaxScaler, StandardScaler
from sparkorca.errors import (
    InvalidArgumentError,
    MissingPathError,
    NoContextError,
    OrcaError,
    OrcaRuntimeError,
)

pytestmark = pytest.mark.engine

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tiny data: two shuffle partitions are enough for Spark's joins and sorts
shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf={**QUIET, "spark.sql.shuffle.partitions": "2"})

PEOPLE = ("id,name,joined,score,flag,note\n"
          "1,ann,2020-01-01,\"1,000.5\",True,NA\n"
          "2,bob,2020-02-01,,False,x\n"
          "3,NA,2020-03-01,2.5,true,\"a, \"\"quoted\"\"\"\n"
          "4,dan,2020-04-01,-3e2,False,\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("xshards")
    (root / "people.csv").write_text(PEOPLE)
    (root / "people_nh.csv").write_text(PEOPLE.split("\n", 1)[1])
    (root / "dir").mkdir()
    for i in range(2):
        pd.DataFrame({"id": np.arange(i * 5, i * 5 + 5), "v": np.arange(5) / 4.0,
                      "k": list("abcab")}).to_csv(root / "dir" / f"part-{i}.csv", index=False)
    (root / "dir" / "_SUCCESS").write_text("")
    (root / "eu.csv").write_text("a;b;c\n1.000,5;x;7\n2,25;y;8\n")
    events = pd.DataFrame({"value": [3, 1, 2], "timestamp": ["2020-01-01 10:00:00",
                                                             "2020-01-02 10:00:00", None],
                           "tag": ["a", None, "c"], "n": [1.5, None, 2.0]})
    events.to_json(root / "events.json", orient="records", lines=True)
    events.to_json(root / "records.json", orient="records")
    (root / "pq").mkdir()
    for i in range(2):
        pd.DataFrame({"id": np.arange(i * 3, i * 3 + 3), "score": np.arange(3) * 1.5,
                      "name": list("xyz")}).to_parquet(root / "pq" / f"p{i}.parquet",
                                                       index=False)
    (root / "bad.csv").write_text("id,name,score\n1,a,0.5\n2,b,1.0\n3,c,1.5,extra\n4,d,2.0\n")
    (root / "bad.json").write_text('{"a": 1}\n{"a": 2,\n{"a": 3}\n')
    return root


# -- no Spark needed (these run before the module's context starts) ------------------------
def test_file_helpers_on_local_and_remote_filesystems(tmp_path):
    local = str(tmp_path / "a" / "b")
    file.makedirs(local)
    file.makedirs(f"file://{local}")  # again: nothing to do
    assert file.exists(local) and not file.is_file(local)
    text = str(tmp_path / "a" / "b" / "q.txt")
    assert file.write_text(text, "Q1,Q1,1\n\n  Q2,Q2,2 \n") == 20
    assert file.open_text(f"file://{text}") == ["Q1,Q1,1", "", "Q2,Q2,2"]
    assert file.listdir(str(tmp_path / "a")) == ["b"]
    np.save(tmp_path / "r.npy", np.arange(10).reshape(2, 5))
    np.savez(tmp_path / "r.npz", x=np.ones(3))
    assert file.load_numpy(str(tmp_path / "r.npy")).shape == (2, 5)
    assert file.load_numpy(str(tmp_path / "r.npz"))["x"].tolist() == [1.0, 1.0, 1.0]

    # memory:// stands for a remote filesystem (hdfs://, s3:// go through the same calls)
    remote = "memory://sparkorca-test"
    assert file.put_local_file_to_remote(text, f"{remote}/q.txt") == 0
    with pytest.raises(InvalidArgumentError, match="over_write"):
        file.put_local_file_to_remote(text, f"{remote}/q.txt")
    assert file.put_local_file_to_remote(text, f"{remote}/q.txt", over_write=True) == 0
    assert file.open_text(f"{remote}/q.txt")[0] == "Q1,Q1,1"
    assert file.put_local_dir_to_remote(str(tmp_path / "a"), f"{remote}/tree") == 0
    assert file.exists(f"{remote}/tree/b/q.txt")  # recursive (Orca's s3/hdfs: top level)
    assert file.get_remote_dir_to_local(f"{remote}/tree", str(tmp_path / "back")) == 0
    assert (tmp_path / "back" / "b" / "q.txt").read_text().startswith("Q1")
    assert file.get_remote_file_to_local(f"{remote}/q.txt", str(tmp_path / "q2.txt")) == 0
    file.put_local_files_with_prefix_to_remote(str(tmp_path / "r."), f"{remote}/np")
    assert file.listdir(f"{remote}/np") == ["r.npy", "r.npz"]
    assert file.load_numpy(f"{remote}/np/r.npy").sum() == 45
    got = file.get_remote_files_with_prefix_to_local(f"{remote}/np/r.", str(tmp_path / "np"))
    assert got == str(tmp_path / "np" / "r.") and sorted(os.listdir(tmp_path / "np")) == \
        ["r.npy", "r.npz"]

    from PIL import Image
    Image.new("RGB", (4, 3), "red").save(tmp_path / "red.png")
    file.put_local_file_to_remote(str(tmp_path / "red.png"), f"{remote}/red.png")
    assert file.open_image(f"{remote}/red.png").size == (4, 3)

    @file.enable_multi_fs_load_static
    def load(path):
        assert "://" not in path  # a local copy
        return np.load(path)
    assert load(f"{remote}/np/r.npy").shape == (2, 5)

    class Model:
        @file.enable_multi_fs_save
        def save(self, path):
            np.save(path, np.zeros(2))
    Model().save(f"{remote}/saved.npy")
    assert file.load_numpy(f"{remote}/saved.npy").tolist() == [0.0, 0.0]

    with pytest.raises(MissingPathError, match="No such file or directory") as e:
        file.open_text(f"{remote}/nope.txt")
    assert isinstance(e.value, FileNotFoundError)
    file.rmdir(remote)
    assert not file.exists(f"{remote}/q.txt")


def test_reading_without_a_context_says_how_to_start_one(files):
    with pytest.raises(NoContextError, match="init_orca_context"):
        read_csv(str(files / "people.csv"))
    with pytest.raises(NoContextError, match="init_orca_context"):
        XShards.partition(np.zeros(4))


def test_orca_data_prep_example_runs_with_imports_changed_only(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "orca_data_prep.py"),
                          "--work-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "train rows: 160, test rows: 40" in out.stdout
    assert "numpy shards: 4 partitions, 200 rows" in out.stdout


# -- on the module's Spark application -------------------------------------------------------
def test_partition_cuts_numpy_structures_into_exactly_num_shards(shared_sc):
    assert XShards is SparkXShards is Shards
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10)
    for data in (x, [x, y], (x, y), {"x": x, "y": y}, {"x": (x, x[:, 0]), "y": [y]}):
        shards = XShards.partition(data, num_shards=3)
        assert shards.num_partitions() == 3
        parts = shards.rdd.glom().collect()  # one shard per partition, of the input's shape
        assert [len(p) for p in parts] == [1, 1, 1] and type(parts[0][0]) is type(data)
        assert [_kinds.rows(p[0]) for p in parts] == [4, 3, 3]  # np.array_split's sizes
    assert len(shards) == 10
    glued = np.concatenate([p[0]["x"][0] for p in parts])
    assert np.array_equal(glued, x) and glued.dtype == np.float32
    assert XShards.partition(x).num_partitions() == shared_sc.defaultParallelism
    assert XShards.partition(pd.DataFrame({"a": np.arange(6)}), 2).first()["a"].tolist() == \
        [0, 1, 2]
    with pytest.raises(InvalidArgumentError, match="num_shards=20.*at most 10"):
        XShards.partition(x, num_shards=20)
    with pytest.raises(InvalidArgumentError, match="num_shards"):
        XShards.partition(x, num_shards=0)
    with pytest.raises(InvalidArgumentError, match=r"data=.*\[9, 10\] rows"):
        XShards.partition({"x": x, "y": y[:9]})
    with pytest.raises(InvalidArgumentError, match=r"data=.*builtins.int at data\[0\]"):
        XShards.partition([1, 2, 3])
    with pytest.raises(InvalidArgumentError, match="data=.*empty dict"):
        XShards.partition({})


def _four_kinds():
    x = np.arange(24, dtype=np.float64).reshape(12, 2)
    frame = pd.DataFrame({"a": np.arange(12), "b": list("abcdefabcdef"), "c": np.arange(12) / 2})
    return {
        "DataFrame": XShards.partition(frame, 2),
        "ndarray": XShards.partition(x, 2),
        "list": XShards.partition(x, 2).transform_shard(lambda a: [tuple(r) for r in a]),
        "dict": XShards.partition({"x": x, "y": np.arange(12)}, 2),
    }


def _rows(shard):
    if isinstance(shard, dict):
        return shard["y"].tolist()
    if isinstance(shard, pd.DataFrame):
        return shard["a"].tolist()
    return [tuple(r) for r in shard]


def test_every_method_on_every_shard_type(shared_sc, tmp_path):
    refusals = {  # method -> the shard types it takes; every other type is refused by name
        "partition_by": lambda s: s.partition_by("a"),
        "select": lambda s: s.select("a"),
        "unique": lambda s: s.unique(),
        "concat_to_pdf": lambda s: s.concat_to_pdf(),
        "describe": lambda s: s.describe(),
        "max_values": lambda s: s.max_values("a"),
        "stack_feature_labels": lambda s: s.stack_feature_labels(),
        "to_spark_df": lambda s: s.to_spark_df(),
        "merge": lambda s: s.merge(s),
    }
    accepted = {"partition_by": {"DataFrame"}, "select": {"DataFrame", "dict"},
                "concat_to_pdf": {"DataFrame"}, "describe": {"DataFrame"},
                "max_values": {"DataFrame"}, "to_spark_df": {"DataFrame", "dict"},
                "merge": {"DataFrame"}, "unique": {"ndarray"}, "stack_feature_labels": set()}
    for kind, shards in _four_kinds().items():
        assert len(shards) == 12, kind  # rows, whatever the shard type
        # repartition: exactly n partitions, at most one shard each, every row once
        per_partition = shards.repartition(5).rdd.map(lambda s: _rows(s)).glom().collect()
        assert len(per_partition) == 5 and max(len(p) for p in per_partition) == 1, kind
        rows = sorted(r for p in per_partition for s in p for r in s)
        assert len(rows) == 12 and len(set(rows)) == 12, kind
        sampled = [_rows(s) for s in shards.sample(0.5, random_state=3).collect()]
        assert sum(map(len, sampled)) == 6, kind
        if kind in ("DataFrame", "dict"):  # each shard its own draw (Orca: the same rows)
            assert [r % 6 for r in sampled[0]] != [r % 6 for r in sampled[1]]
        # split: list and tuple shards into their parts (as Orca), others stay whole
        assert len(shards.split()) == (6 if kind == "list" else 1)
        for method, call in refusals.items():
            if kind in accepted[method]:
                continue
            with pytest.raises(InvalidArgumentError, match="shards of (pandas|numpy|builtins)"):
                call(shards)
    dict_shards = _four_kinds()["dict"]
    assert dict_shards.sample(0.5, random_state=3).collect()[1]["y"].tolist() == \
        sampled[1]  # the same draw again
    dict_shards.save_pickle(str(tmp_path / "dict"))
    back = XShards.load_pickle(str(tmp_path / "dict"))
    assert [s["y"].tolist() for s in back.collect()] == [list(range(6)), list(range(6, 12))]
    assert not back.is_cached() and back.cache().is_cached() and not back.uncache().is_cached()
    first, other = dict_shards.zip(back).first()
    assert first["y"].tolist() == other["y"].tolist()
    assert dict_shards.transform_shard(lambda s, k: s["y"] * k.value,
                                       SharedValue(10)).first().tolist()[:2] == [0, 10]
    assert dict_shards.head(2)["x"].shape == (2, 2)
    assert sorted(dict_shards.to_spark_df().toPandas()["y"]) == list(range(12))
    assert list(dict_shards["x"].first().shape) == [6, 2]
    with pytest.raises(InvalidArgumentError, match="key='z'.*key of the shards"):
        dict_shards["z"]
    with pytest.raises(InvalidArgumentError, match="num_partitions"):
        dict_shards.repartition(0)
    with pytest.raises(InvalidArgumentError, match="other"):
        dict_shards.zip(dict_shards.repartition(3))
    with pytest.raises(InvalidArgumentError, match="path=.*does not exist yet"):
        dict_shards.save_pickle(str(tmp_path / "dict"))
    with pytest.raises(MissingPathError, match="No such file or directory"):
        XShards.load_pickle(str(tmp_path / "nothing"))
    with pytest.raises(InvalidArgumentError, match="frac"):
        dict_shards.sample(1.5)


def test_dataframe_methods_as_orca(shared_sc):
    frame = pd.DataFrame({"id": np.arange(10), "loc": list("aabbccddee"),
                          "price": np.arange(10) * 1.5})
    shards = XShards.partition(frame, 2)
    assert shards.get_schema()["columns"] == ["id", "loc", "price"]
    assert shards.select("id").collect()[0].columns.tolist() == ["id"]
    assert len(shards.concat_to_pdf()) == 10 and shards.max_values("price") == 13.5
    assert sorted(shards["loc"].unique()) == list("abcde")
    assert len(shards["id"]) == 10
    with pytest.raises(InvalidArgumentError, match="key='abc'.*column of the shards"):
        shards["abc"]
    summary = shards.describe("price")
    assert summary["summary"].tolist()[:2] == ["count", "mean"] and \
        float(summary["price"][1]) == 6.75
    by = shards.partition_by(cols="loc", num_partitions=3)
    homes = {}
    for i, part in enumerate(by.rdd.map(lambda df: sorted(set(df["loc"]))).glom().collect()):
        assert len(part) <= 1
        for value in (part[0] if part else []):
            homes.setdefault(value, set()).add(i)
    assert by.num_partitions() == 3 and all(len(h) == 1 for h in homes.values())
    assert len(homes) == 5
    assert shards.partition_by(column="loc", num_partitions=3).num_partitions() == 3
    with pytest.raises(InvalidArgumentError, match="cols='nope'"):
        shards.partition_by(cols="nope")
    with pytest.raises(InvalidArgumentError, match="cols=.*columns of the shards"):
        shards.select(["id", "zzz"])

    train, test = shards.transform_shard(lambda df: (df[:-1], df[-1:])).split()
    assert len(train) == 8 and len(test) == 2
    assert shards.transform_shard(lambda df: [df]).split()[0].first().shape == (5, 3)

    right = XShards.partition(pd.DataFrame({"id": [1, 2, 3, 11], "price": [0.0] * 4,
                                            "kind": list("wxyz")}), 2)
    merged = shards.merge(right, on="id").concat_to_pdf().sort_values("id")
    assert merged.columns.tolist() == ["id", "loc", "price_x", "price_y", "kind"]
    assert merged["id"].tolist() == [1, 2, 3]
    with pytest.raises(InvalidArgumentError, match="how="):
        shards.merge(right, how="sideways")

    records = XShards(shared_sc.parallelize([(np.ones(3) * i, float(i)) for i in range(6)], 2))
    stacked = records.repartition(3).stack_feature_labels().collect()
    assert len(stacked) == 3 and stacked[0]["x"].dtype == np.float32
    assert sorted(y for d in stacked for y in d["y"]) == [0, 1, 2, 3, 4, 5]

    sdf = shards.to_spark_df()
    assert sdf.schema.simpleString() == "struct<id:bigint,loc:string,price:double>"
    assert sdf.rdd.getNumPartitions() == 2
    back = XShards.from_spark_df(sdf.filter("id < 3"))  # partition 2 is empty: no shard
    assert len(back.collect()) == 1 and len(back) == 3
    assert shards.sort_values("price", ascending=False).collect()[0]["id"].iloc[0] == 9
    assert len(shards.transform_shard(lambda df: pd.concat([df, df])).deduplicates()) == 10
    assembled = shards.assembleFeatureLabelCols(["id", "price"], ["price"]).first()
    assert assembled["x"].shape == (5, 2) and assembled["y"].shape == (5, 1)
    nulls = XShards.partition(frame.assign(price=[np.nan] * 3 + [1.0] * 7), 2)
    assert nulls.get_null_sum()["total"].tolist() == [0, 0, 3]
    assert nulls.drop_missing_value().get_schema()["columns"] == ["id", "loc"]


def test_eager_mode_computes_and_caches_each_new_xshards_at_the_call(shared_sc):
    OrcaContext._eager_mode = True  # as Orca's test fixtures set it
    shards = XShards.partition(np.arange(12).reshape(6, 2), 2)
    doubled = shards.transform_shard(lambda a: a * 2)
    assert doubled.is_cached() and doubled.collect()[0][0].tolist() == [0, 2]
    added = doubled.transform_shard(lambda a: a + 1)
    assert added.is_cached() and not doubled.is_cached()  # the parent is let go ...
    kept = added.cache().transform_shard(lambda a: a)
    assert kept.is_cached() and added.is_cached()  # ... unless the program cached it
    pairs = shards.transform_shard(lambda a: (a[:1], a[1:]))
    first, rest = pairs.split()
    assert first.is_cached() and rest.is_cached() and not pairs.is_cached()
    assert len(first) == 2 and len(rest) == 4
    with pytest.raises(Exception, match="ZeroDivisionError"):
        shards.transform_shard(lambda a: a / 0 if a.dtype.kind == "i" and 1 // 0 else a)
    OrcaContext._eager_mode = False
    lazy = shards.transform_shard(lambda a: 1 // 0)  # lazy: nothing runs yet
    assert not lazy.is_cached()


def test_scalers_fit_on_all_shards_and_append_one_column(shared_sc):
    frame = pd.DataFrame({"ID": np.arange(8), "sale_price": np.arange(8) * 10.0,
                          "location": np.ones(8)})
    shards = XShards.partition(frame, 2)
    scaler = MinMaxScaler(inputCol="sale_price", outputCol="sale_price_scaled")
    scaled = scaler.fit_transform(shards)
    out = scaled.concat_to_pdf()
    assert out.columns.tolist() == ["ID", "sale_price", "location", "sale_price_scaled"]
    assert np.allclose(np.stack(out["sale_price_scaled"]).ravel(), np.arange(8) / 7)
    multi = MinMaxScaler(inputCol=["ID", "sale_price", "location"],
                         outputCol="multi_column_scaled").fit_transform(scaled)
    got = np.stack(multi.concat_to_pdf()["multi_column_scaled"])
    assert got.shape == (8, 3) and np.allclose(got[:, 2], 0.5)  # constant: (min + max) / 2
    assert len(multi.get_schema()["columns"]) == 5
    # transform uses the statistics of fit, not of the new shards
    later = scaler.transform(XShards.partition(frame.assign(sale_price=[140.0] * 8), 2))
    assert np.allclose(np.stack(later.concat_to_pdf()["sale_price_scaled"]), 2.0)

    std = StandardScaler(withMean=True, inputCol="sale_price", outputCol="z").fit_transform(
        shards)
    z = np.stack(std.concat_to_pdf()["z"]).ravel()
    want = (frame.sale_price - frame.sale_price.mean()) / frame.sale_price.std()
    assert np.allclose(z, want)
    with pytest.raises(OrcaRuntimeError, match="fit"):
        StandardScaler(inputCol="ID", outputCol="o").transform(shards)
    with pytest.raises(InvalidArgumentError, match="inputCol"):
        MinMaxScaler(inputCol="nope", outputCol="o").fit(shards)
    with pytest.raises(InvalidArgumentError, match="outputCol"):
        MinMaxScaler(inputCol="ID", outputCol="")
    with pytest.raises(InvalidArgumentError, match="max="):
        MinMaxScaler(min=1.0, max=0.0)


READS = [  # (reader, file, kwargs): both backends must give the same frames
    (read_csv, "people.csv", {}),
    (read_csv, "people_nh.csv", {"header": None}),
    (read_csv, "people_nh.csv", {"names": ["i", "n", "j", "s", "f", "t"], "index_col": "i",
                                 "parse_dates": ["j"]}),
    (read_csv, "people.csv", {"header": 0, "names": ["u", "v"], "usecols": [0, 3],
                              "dtype": {"u": "float32"}, "thousands": ","}),
    (read_csv, "people.csv", {"dtype": {"id": str, "score": str}, "na_values": ["bob"],
                              "keep_default_na": False}),
    (read_csv, "people.csv", {"converters": {"name": str.upper}, "true_values": ["ann"]}),
    (read_csv, "people.csv", {"nrows": 2, "skiprows": [2]}),  # pandas' parser on executors
    (read_csv, "eu.csv", {"sep": ";", "thousands": ".", "decimal": ","}),
    (read_json, "events.json", {"dtype": {"value": "float"}}),
    (read_json, "records.json", {"lines": False, "orient": "records"}),
    (read_parquet, "pq", {"columns": ["id", "score"]}),
]


def _frame(shards):
    df = shards.concat_to_pdf()
    sort_by = [c for c in ("id", "value", "a") if c in df.columns]
    return df.sort_values(sort_by).reset_index(drop=True) if sort_by else \
        df.reset_index(drop=df.index.name is None)


def test_both_read_backends_give_the_same_frames(shared_sc, files):
    for reader, name, kwargs in READS:
        frames = {}
        for backend in ("spark", "pandas"):
            OrcaContext.pandas_read_backend = backend
            shards = reader(str(files / name), **kwargs)
            assert shards.is_cached()  # read at the call, as Orca
            frames[backend] = _frame(shards)
            shards.uncache()
        pd.testing.assert_frame_equal(frames["spark"], frames["pandas"],
                                      obj=f"{reader.__name__}({name}, {kwargs})")
    OrcaContext.pandas_read_backend = "spark"
    header_none = read_csv(str(files / "people_nh.csv"), header=None)
    assert list(header_none.concat_to_pdf().columns) == [0, 1, 2, 3, 4, 5]
    people = read_csv(str(files / "people.csv")).concat_to_pdf()
    assert people.dtypes.astype(str).tolist() == ["int64", "object", "object", "object",
                                                  "bool", "object"]
    assert read_csv(str(files / "dir")).num_partitions() >= 1
    assert read_parquet(str(files / "pq"), columns="score").get_schema()["columns"] == ["score"]


def test_bad_input_fails_at_the_read_call_naming_it(shared_sc, files):
    for backend in ("spark", "pandas"):
        OrcaContext.pandas_read_backend = backend
        for reader in (read_csv, read_json, read_parquet):
            with pytest.raises(MissingPathError, match="No such file or directory") as e:
                reader(str(files / "nope"))
            assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, OrcaError)
        with pytest.raises(OrcaRuntimeError, match="(?s)bad.csv.*(line 4|3,c,1.5,extra)"):
            read_csv(str(files / "bad.csv"))
        with pytest.raises(OrcaRuntimeError, match="bad.json") as e:
            read_json(str(files / "bad.json"))
        assert "Traceback" not in str(e.value) and "\tat " not in str(e.value)
        with pytest.raises(InvalidArgumentError, match="squeeze=True.*removed"):
            read_csv(str(files / "people.csv"), squeeze=True)
        with pytest.raises(InvalidArgumentError, match="usecol="):
            read_csv(str(files / "people.csv"), usecol=["id"])
        with pytest.raises(InvalidArgumentError, match="chunksize"):
            read_csv(str(files / "people.csv"), chunksize=2)
        with pytest.raises(InvalidArgumentError, match="columns=.*not found: \\['nope'\\]"):
            read_parquet(str(files / "pq"), columns=["id", "nope"])
        with pytest.raises(InvalidArgumentError, match="engine2"):
            read_parquet(str(files / "pq"), engine2="x")
    with pytest.raises(InvalidArgumentError, match="multiLine.*Spark reader option"):
        read_csv(str(files / "people.csv"), multiLine=True)  # pandas backend
    OrcaContext.pandas_read_backend = "spark"
    with pytest.raises(InvalidArgumentError, match="usecols=.*not found: \\['zzz'\\]"):
        read_csv(str(files / "people.csv"), usecols=["id", "zzz"])
    with pytest.raises(InvalidArgumentError, match="header=True"):
        read_csv(str(files / "people.csv"), header=True)
    with pytest.raises(InvalidArgumentError, match="mergeSchema2"):
        read_parquet(str(files / "pq"), mergeSchema2=True)
    assert len(read_csv(str(files / "people.csv"), multiLine=True)) == 4
    OrcaContext.shard_size = 2
    assert [len(s) for s in read_csv(str(files / "dir")).collect()] == [2, 2, 1, 2, 2, 1] or \
        max(len(s) for s in read_csv(str(files / "dir")).collect()) == 2

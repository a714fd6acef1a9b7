"""sparkorca.cluster.pipeline without an engine: params, converters, Namespace,
args merging, and the Arrow batching and output encoding of TFModel.transform."""

import argparse
import collections

import numpy as np
import pyarrow as pa
import pytest

from sparkorca.cluster import InputMode
from sparkorca.cluster.pipeline import (
    HasBatchSize,
    HasSteps,
    Namespace,
    TFEstimator,
    TFModel,
    TFParams,
    TFTypeConverters,
    yield_batch,
)
from sparkorca.cluster.tfmodel_worker import (
    InferencePlan,
    InputSpec,
    OutputSpec,
    _numpy_batches,
    _to_arrow,
)
from sparkorca.errors import InvalidArgumentError


def train_fn(args, ctx):
    pass


ESTIMATOR_DEFAULTS = {"input_mapping": {}, "cluster_size": 1, "num_ps": 0,
                      "driver_ps_nodes": False, "input_mode": InputMode.SPARK,
                      "master_node": "chief", "protocol": "grpc", "tensorboard": False,
                      "model_dir": None, "export_dir": None, "tfrecord_dir": None,
                      "batch_size": 100, "epochs": 1, "readers": 1, "steps": 1000,
                      "grace_secs": 30}
MODEL_DEFAULTS = {"input_mapping": {}, "output_mapping": {}, "batch_size": 100,
                  "model_dir": None, "export_dir": None, "signature_def_key": None,
                  "tag_set": None}
# param name -> the TFoS accessor suffix (setX / getX) and a value to set
ACCESSORS = {"input_mapping": ("InputMapping", {"a": "x"}), "cluster_size": ("ClusterSize", 3),
             "num_ps": ("NumPS", 1), "driver_ps_nodes": ("DriverPSNodes", True),
             "input_mode": ("InputMode", InputMode.TENSORFLOW),
             "master_node": ("MasterNode", "master"), "protocol": ("Protocol", "rdma"),
             "tensorboard": ("Tensorboard", True), "model_dir": ("ModelDir", "/m"),
             "export_dir": ("ExportDir", "/e"), "tfrecord_dir": ("TFRecordDir", "/t"),
             "batch_size": ("BatchSize", 7), "epochs": ("Epochs", 4), "readers": ("Readers", 2),
             "steps": ("Steps", 9), "grace_secs": ("GraceSecs", 5),
             "output_mapping": ("OutputMapping", {"y": "out"}),
             "signature_def_key": ("SignatureDefKey", "serving_default"),
             "tag_set": ("TagSet", "serve")}


def test_defaults_are_tensorflowonspark_s():
    est = TFEstimator(train_fn, {})
    assert {p.name: est.getOrDefault(p) for p in est.params} == ESTIMATOR_DEFAULTS
    model = TFModel({})
    assert {p.name: model.getOrDefault(p) for p in model.params} == MODEL_DEFAULTS


@pytest.mark.parametrize("cls,names", [(TFEstimator, ESTIMATOR_DEFAULTS),
                                       (TFModel, MODEL_DEFAULTS)])
def test_every_setter_chains_and_its_getter_reads_it_back(cls, names):
    obj = cls(train_fn, {}) if cls is TFEstimator else cls({})
    for name in names:
        suffix, value = ACCESSORS[name]
        assert getattr(obj, f"set{suffix}")(value) is obj
        assert getattr(obj, f"get{suffix}")() == value
        assert obj.isSet(name)


def test_converters_as_spark_s_and_to_dict_takes_exactly_a_dict():
    est = TFEstimator(train_fn, {})
    assert est.setBatchSize(3.0).getBatchSize() == 3
    with pytest.raises(TypeError, match='param "batch_size"'):
        est.setBatchSize(3.5)
    with pytest.raises(TypeError, match='param "tensorboard"'):
        est.setTensorboard("yes")
    with pytest.raises(TypeError, match="Could not convert"):
        est.setInputMapping(collections.OrderedDict(a="x"))
    assert est.setModelDir(None).getModelDir() is None  # None skips the converter
    assert TFTypeConverters.toDict({"a": 1}) == {"a": 1}
    with pytest.raises(TypeError, match=r"Could not convert \[1\] to OrderedDict"):
        TFTypeConverters.toDict([1])


def test_input_mode_takes_both_modes_and_refuses_others():
    est = TFEstimator(train_fn, {})
    assert est.setInputMode(InputMode.TENSORFLOW).getInputMode() == 0
    for bad in (2, -1, True, "1"):
        with pytest.raises(InvalidArgumentError, match="input_mode"):
            est.setInputMode(bad)


def test_namespace_from_dict_argparse_namespace_and_argv():
    n1 = Namespace({"string": "foo", "integer": 1})
    assert "string" in n1 and "extra" not in n1
    assert n1.string == "foo" and repr(n1) == "Namespace(integer=1, string='foo')"
    parsed = argparse.ArgumentParser()
    parsed.add_argument("--string", default="foo")
    parsed.add_argument("--integer", type=int, default=1)
    n2 = Namespace(parsed.parse_args([]))
    assert n2 == n1 and n2 is not n1
    n3 = Namespace(n1)
    assert n3 == n1 and n3.integer == 1
    argv = ["--foo", "1", "--bar", "2"]
    n4 = Namespace(argv)
    assert n4.argv == argv and list(n4) == argv and n4 == argv and repr(n4) == str(argv)
    assert Namespace(n4).argv == argv
    with pytest.raises(InvalidArgumentError, match="tf_args=42"):
        Namespace(42)
    with pytest.raises(InvalidArgumentError, match="tf_args"):
        TFEstimator(train_fn, 42)
    with pytest.raises(InvalidArgumentError, match="train_fn"):
        TFEstimator("not a function", {})


class Foo(TFParams, HasBatchSize, HasSteps):
    def __init__(self, args):
        super().__init__()
        self.args = args


def test_merge_args_params_params_win_even_as_defaults():
    merged = Foo(Namespace({"a": 1, "b": 2})).setBatchSize(10).setSteps(100).merge_args_params()
    assert merged == Namespace({"a": 1, "b": 2, "batch_size": 10, "steps": 100})
    est = TFEstimator(train_fn, {"batch_size": 64, "lr": 0.1})
    merged = est.merge_args_params()
    assert merged.batch_size == 100 and merged.lr == 0.1  # the param default wins
    assert merged.input_mapping == {} and merged.grace_secs == 30
    assert est.args.batch_size == 64  # the estimator's own args are left alone


def test_yield_batch_columns_of_batch_size_rows_and_a_partial_last():
    rows = [(i, bytearray(b"\x01\x02"), [i, i]) for i in range(5)]
    batches = list(yield_batch(iter(rows), 2, 3))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    assert batches[0] == [[0, 1], [b"\x01\x02", b"\x01\x02"], [[0, 0], [1, 1]]]
    assert [b[0] for b in yield_batch(iter([(1,), None, (2,)]), 10)] == [[1]]


def _plan(batch_size, inputs=None, outputs=()):
    inputs = inputs or [InputSpec("a", "x", 1, (-1,))]
    return InferencePlan("/e", ("serve",), "serving_default", "f", batch_size, list(inputs),
                         list(outputs))


def test_rows_are_rebatched_to_batch_size_across_record_batches_in_order():
    inputs = [InputSpec("a", "x", 1, (-1,)), InputSpec("v", "y", 1, (-1, 2))]
    record_batches = []
    for start, n in [(0, 3), (3, 0), (3, 7), (10, 1), (11, 4)]:
        a = np.arange(start, start + n, dtype=np.float32)
        v = pa.array([[float(i), float(-i)] for i in range(start, start + n)],
                     type=pa.list_(pa.float32()))
        record_batches.append(pa.RecordBatch.from_arrays([pa.array(a), v], names=["a", "v"]))
    out = list(_numpy_batches(iter(record_batches), _plan(4, inputs)))
    assert [len(b[0]) for b in out] == [4, 4, 4, 3]
    assert np.concatenate([b[0] for b in out]).tolist() == list(range(15))
    assert np.concatenate([b[1] for b in out]).shape == (15, 2)
    assert out[1][1][0].tolist() == [4.0, -4.0]


def test_outputs_become_scalars_or_one_array_level_per_dimension():
    scalar = _to_arrow(np.array([1, 2, 3], dtype=np.int32), OutputSpec("o", "c", "long", 0))
    assert scalar.type == pa.int64() and scalar.to_pylist() == [1, 2, 3]
    cube = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    nested = _to_arrow(cube, OutputSpec("o", "c", "float", 2))
    assert nested.to_pylist() == cube.tolist()
    text = _to_arrow(np.array([b"a", b"bc"], dtype=object), OutputSpec("o", "c", "binary", 0))
    assert text.to_pylist() == [b"a", b"bc"]
    plan = _plan(1, outputs=[OutputSpec("o", "pred", "float", 1), OutputSpec("p", "n", "long", 0)])
    assert plan.spark_schema().simpleString() == "struct<pred:array<float>,n:bigint>"


# -- saved_model.pb read without TensorFlow: a hand-encoded SavedModel -------------------
def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64s as protobuf writes them
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(num, value):
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    value = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _entry(key, value):
    return _field(1, key) + _field(2, value)


def _tensor_info(name, dtype, dims):
    shape = b"".join(_field(2, _field(1, d)) for d in dims)
    return _field(1, name + ":0") + _field(2, dtype) + _field(3, shape)


def _saved_model(path, graphs):
    """graphs: {tags: {signature: (inputs, outputs)}}, each {name: (dtype, dims)}."""
    body = _field(1, 1)
    for tags, signatures in graphs.items():
        meta = _field(1, b"".join(_field(4, t) for t in tags))
        meta += _field(2, b"\x0a\x00" * 50)  # a graph_def to skip
        for key, (inputs, outputs) in signatures.items():
            sig = b"".join(_field(1, _entry(n, _tensor_info(n, *spec)))
                           for n, spec in inputs.items())
            sig += b"".join(_field(2, _entry(n, _tensor_info(n, *spec)))
                            for n, spec in outputs.items())
            meta += _field(5, _entry(key, sig + _field(3, "tensorflow/serving/predict")))
        body += _field(2, meta)
    path.mkdir(exist_ok=True)
    (path / "saved_model.pb").write_bytes(body)
    return str(path)


SIG = {"serving_default": ({"features": (1, (-1, 64))},
                           {"output_0": (1, (-1, 10)), "ids": (9, (-1,)), "z": (8, (-1,))})}


def test_signatures_are_read_from_saved_model_pb_without_tensorflow(tmp_path):
    from sparkorca.cluster.saved_model import _output_kind, read_signature
    path = _saved_model(tmp_path / "m", {("serve",): SIG, ("gpu", "serve"): SIG})
    sig = read_signature(path, "serve", None)  # None: 'serving_default'
    assert sig.tags == ("serve",) and sig.signature_def_key == "serving_default"
    assert sig.inputs == {"features": (1, (-1, 64))}
    assert sig.outputs["output_0"] == (1, (-1, 10)) and sig.outputs["ids"] == (9, (-1,))
    assert read_signature(path, "serve, gpu", "serving_default").tags == ("gpu", "serve")
    assert _output_kind("output_0", *sig.outputs["output_0"]) == ("float", 1)
    assert _output_kind("ids", *sig.outputs["ids"]) == ("long", 0)
    with pytest.raises(InvalidArgumentError, match="output_mapping.*complex64"):
        _output_kind("z", *sig.outputs["z"])
    with pytest.raises(InvalidArgumentError, match="batch dimension"):
        _output_kind("s", 1, ())
    with pytest.raises(InvalidArgumentError, match=r"tag_set=None .*\['serve', 'gpu,serve'\]"):
        read_signature(path, None, None)
    with pytest.raises(InvalidArgumentError, match=r"tag_set='train'"):
        read_signature(path, "train", None)
    with pytest.raises(InvalidArgumentError,
                       match=r"signature_def_key='predict' .*\['serving_default'\]"):
        read_signature(path, "serve", "predict")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match=r"export_dir=.*empty.*it holds \[\]"):
        read_signature(str(tmp_path / "empty"), "serve", None)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        read_signature(str(tmp_path / "nowhere"), "serve", None)


def test_the_driver_reads_a_signature_without_importing_tensorflow(tmp_path):
    import subprocess
    import sys
    path = _saved_model(tmp_path / "m", {("serve",): SIG})
    code = ("import sys; from sparkorca.cluster.saved_model import read_signature; "
            f"read_signature({path!r}, None, None); print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_new_export_to_the_same_dir_gets_a_new_cache_key(tmp_path):
    from sparkorca.cluster.saved_model import read_signature
    path = _saved_model(tmp_path / "m", {("serve",): SIG})
    (tmp_path / "m" / "variables").mkdir()
    (tmp_path / "m" / "variables" / "variables.index").write_bytes(b"weights 1")
    first = read_signature(path, None, None).fingerprint
    assert read_signature(path, None, None).fingerprint == first
    (tmp_path / "m" / "variables" / "variables.index").write_bytes(b"weights 2")
    assert read_signature(path, None, None).fingerprint != first

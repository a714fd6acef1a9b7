"""TensorFlowOnSpark's ``pipeline``: a Spark ML ``TFEstimator`` that trains on a
TFCluster fed from a DataFrame, and the ``TFModel`` it returns, which runs the
exported SavedModel on the executors.

``TFModel.transform`` reads the SavedModel's signature on the driver (so a bad
mapping fails before any job, and the output schema is known), then runs
``mapInArrow``: Arrow batches in, ``batch_size`` rows per signature call, Arrow
batches out, in row order. Each Spark Python worker loads a SavedModel once and
keeps it for later partitions and later ``transform`` calls (Spark reuses its
Python workers).

Examples
--------
>>> from sparkorca.cluster.pipeline import TFEstimator
>>> model = (TFEstimator(main_fun, args).setInputMapping({"image": "image", "label": "label"})
...          .setClusterSize(2).setEpochs(1).setBatchSize(64).setExportDir("/tmp/export")
...          .fit(df))
>>> preds = (model.setInputMapping({"image": "features"})
...          .setOutputMapping({"output_0": "prediction"}).transform(df))
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import logging
import os
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
from pyspark.ml import Estimator, Model
from pyspark.ml.param.shared import Param, Params, TypeConverters

from ..errors import InvalidArgumentError, OrcaRuntimeError
from .roles import InputMode

log = logging.getLogger(__name__)


def _tf_version() -> Optional[str]:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


TF_VERSION = _tf_version()


# -- params --------------------------------------------------------------------
class TFTypeConverters:
    """Converters Spark does not have: ``toDict`` takes a plain dict only."""

    @staticmethod
    def toDict(value):
        if type(value) is dict:  # an exact check, as TensorFlowOnSpark's
            return value
        raise TypeError("Could not convert %s to OrderedDict" % value)


class HasBatchSize(Params):
    batch_size: "Param[int]" = Param(Params._dummy(), "batch_size", "Number of records per batch",
                                     typeConverter=TypeConverters.toInt)

    def setBatchSize(self, value):
        return self._set(batch_size=value)

    def getBatchSize(self):
        return self.getOrDefault(self.batch_size)


class HasClusterSize(Params):
    cluster_size: "Param[int]" = Param(Params._dummy(), "cluster_size",
                                       "Number of nodes in the cluster",
                                       typeConverter=TypeConverters.toInt)

    def setClusterSize(self, value):
        return self._set(cluster_size=value)

    def getClusterSize(self):
        return self.getOrDefault(self.cluster_size)


class HasEpochs(Params):
    epochs: "Param[int]" = Param(Params._dummy(), "epochs", "Number of epochs to train",
                                 typeConverter=TypeConverters.toInt)

    def setEpochs(self, value):
        return self._set(epochs=value)

    def getEpochs(self):
        return self.getOrDefault(self.epochs)


class HasGraceSecs(Params):
    grace_secs: "Param[int]" = Param(
        Params._dummy(), "grace_secs",
        "Number of seconds to wait after feeding data (for final tasks like exporting a "
        "saved_model)", typeConverter=TypeConverters.toInt)

    def setGraceSecs(self, value):
        return self._set(grace_secs=value)

    def getGraceSecs(self):
        return self.getOrDefault(self.grace_secs)


class HasInputMapping(Params):
    input_mapping: "Param[dict]" = Param(Params._dummy(), "input_mapping",
                                         "Mapping of input DataFrame column to input tensor",
                                         typeConverter=TFTypeConverters.toDict)

    def setInputMapping(self, value):
        return self._set(input_mapping=value)

    def getInputMapping(self):
        return self.getOrDefault(self.input_mapping)


class HasInputMode(Params):
    input_mode: "Param[int]" = Param(Params._dummy(), "input_mode",
                                     "Input data feeding mode (0=TENSORFLOW, 1=SPARK)",
                                     typeConverter=TypeConverters.toInt)

    def setInputMode(self, value):
        # TensorFlowOnSpark 2.x refused TENSORFLOW here; sparkorca runs it (train_fn
        # reads its own data, or the TFRecords of tfrecord_dir)
        if value not in (InputMode.TENSORFLOW, InputMode.SPARK) or isinstance(value, bool):
            raise InvalidArgumentError("input_mode", value,
                                       "InputMode.TENSORFLOW (0) or InputMode.SPARK (1)")
        return self._set(input_mode=value)

    def getInputMode(self):
        return self.getOrDefault(self.input_mode)


class HasMasterNode(Params):
    master_node: "Param[str]" = Param(Params._dummy(), "master_node",
                                      "Job name of master/chief worker node",
                                      typeConverter=TypeConverters.toString)

    def setMasterNode(self, value):
        return self._set(master_node=value)

    def getMasterNode(self):
        return self.getOrDefault(self.master_node)


class HasModelDir(Params):
    model_dir: "Param[str]" = Param(Params._dummy(), "model_dir",
                                    "Path to save/load model checkpoints",
                                    typeConverter=TypeConverters.toString)

    def setModelDir(self, value):
        return self._set(model_dir=value)

    def getModelDir(self):
        return self.getOrDefault(self.model_dir)


class HasNumPS(Params):
    num_ps: "Param[int]" = Param(Params._dummy(), "num_ps", "Number of PS nodes in cluster",
                                 typeConverter=TypeConverters.toInt)
    driver_ps_nodes: "Param[bool]" = Param(Params._dummy(), "driver_ps_nodes",
                                           "Run PS nodes on driver locally",
                                           typeConverter=TypeConverters.toBoolean)

    def setNumPS(self, value):
        return self._set(num_ps=value)

    def getNumPS(self):
        return self.getOrDefault(self.num_ps)

    def setDriverPSNodes(self, value):
        return self._set(driver_ps_nodes=value)

    def getDriverPSNodes(self):
        return self.getOrDefault(self.driver_ps_nodes)


class HasOutputMapping(Params):
    output_mapping: "Param[dict]" = Param(Params._dummy(), "output_mapping",
                                          "Mapping of output tensor to output DataFrame column",
                                          typeConverter=TFTypeConverters.toDict)

    def setOutputMapping(self, value):
        return self._set(output_mapping=value)

    def getOutputMapping(self):
        return self.getOrDefault(self.output_mapping)


class HasProtocol(Params):
    protocol: "Param[str]" = Param(Params._dummy(), "protocol",
                                   "Network protocol for Tensorflow (grpc|rdma)",
                                   typeConverter=TypeConverters.toString)

    def setProtocol(self, value):
        return self._set(protocol=value)

    def getProtocol(self):
        return self.getOrDefault(self.protocol)


class HasReaders(Params):
    readers: "Param[int]" = Param(Params._dummy(), "readers", "number of reader/enqueue threads",
                                  typeConverter=TypeConverters.toInt)

    def setReaders(self, value):
        return self._set(readers=value)

    def getReaders(self):
        return self.getOrDefault(self.readers)


class HasSteps(Params):
    steps: "Param[int]" = Param(Params._dummy(), "steps", "Maximum number of steps to train",
                                typeConverter=TypeConverters.toInt)

    def setSteps(self, value):
        return self._set(steps=value)

    def getSteps(self):
        return self.getOrDefault(self.steps)


class HasTensorboard(Params):
    tensorboard: "Param[bool]" = Param(Params._dummy(), "tensorboard",
                                       "Launch tensorboard process",
                                       typeConverter=TypeConverters.toBoolean)

    def setTensorboard(self, value):
        return self._set(tensorboard=value)

    def getTensorboard(self):
        return self.getOrDefault(self.tensorboard)


class HasTFRecordDir(Params):
    tfrecord_dir: "Param[str]" = Param(
        Params._dummy(), "tfrecord_dir",
        "Path to temporarily export a DataFrame as TFRecords (for InputMode.TENSORFLOW apps)",
        typeConverter=TypeConverters.toString)

    def setTFRecordDir(self, value):
        return self._set(tfrecord_dir=value)

    def getTFRecordDir(self):
        return self.getOrDefault(self.tfrecord_dir)


class HasExportDir(Params):
    export_dir: "Param[str]" = Param(Params._dummy(), "export_dir",
                                     "Directory to export saved_model",
                                     typeConverter=TypeConverters.toString)

    def setExportDir(self, value):
        return self._set(export_dir=value)

    def getExportDir(self):
        return self.getOrDefault(self.export_dir)


class HasSignatureDefKey(Params):
    signature_def_key: "Param[str]" = Param(Params._dummy(), "signature_def_key",
                                            "Identifier for a specific saved_model signature",
                                            typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(signature_def_key=None)

    def setSignatureDefKey(self, value):
        return self._set(signature_def_key=value)

    def getSignatureDefKey(self):
        return self.getOrDefault(self.signature_def_key)


class HasTagSet(Params):
    tag_set: "Param[str]" = Param(
        Params._dummy(), "tag_set", "Comma-delimited list of tags identifying a saved_model "
        "metagraph", typeConverter=TypeConverters.toString)

    def setTagSet(self, value):
        return self._set(tag_set=value)

    def getTagSet(self):
        return self.getOrDefault(self.tag_set)


class Namespace:
    """``tf_args`` as an object: a dict, an argparse.Namespace or a Namespace gives
    attributes; a list is kept as ``argv`` (then train_fn gets that list)."""

    argv: Optional[list] = None

    def __init__(self, d):
        if isinstance(d, list):
            self.argv = d
        elif isinstance(d, dict):
            self.__dict__.update(d)
        elif isinstance(d, argparse.Namespace):
            self.__dict__.update(vars(d))
        elif isinstance(d, Namespace):
            self.__dict__.update(d.__dict__)
        else:
            raise InvalidArgumentError("tf_args", d, "a dict, an argparse.Namespace, a "
                                       "pipeline.Namespace or a list of command-line arguments")

    def __iter__(self):
        if self.argv:
            yield from self.argv
        else:
            yield from self.__dict__.keys()

    def __repr__(self):
        if self.argv:
            return str(self.argv)
        items = (f"{k}={self.__dict__[k]!r}" for k in sorted(self.__dict__))
        return f"{type(self).__name__}({', '.join(items)})"

    def __eq__(self, other):
        if self.argv:
            return self.argv == other
        return self.__dict__ == getattr(other, "__dict__", None)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


class TFParams(Params):
    """The user's ``tf_args`` (``self.args``) and the Spark ML params, merged."""

    args: Any = None

    def merge_args_params(self) -> Namespace:
        """A copy of ``args`` with every param's value set on it: params win over args
        of the same name, even when they only hold their default."""
        local_args = copy.copy(self.args)
        values = vars(local_args)
        for p in self.params:
            values[p.name] = self.getOrDefault(p.name)
        return local_args


# -- the estimator ---------------------------------------------------------------
class TFEstimator(Estimator, TFParams, HasInputMapping, HasClusterSize, HasNumPS, HasInputMode,
                  HasMasterNode, HasProtocol, HasGraceSecs, HasTensorboard, HasModelDir,
                  HasExportDir, HasTFRecordDir, HasBatchSize, HasEpochs, HasReaders, HasSteps):
    """A Spark ML Estimator that trains with ``train_fn(args, ctx)`` on a TFCluster.

    ``fit(df)`` starts a TFCluster of ``cluster_size`` nodes, feeds it the columns
    named by ``input_mapping`` (sorted by name; ``ctx.get_data_feed(input_mapping=
    args.input_mapping)`` hands them out by tensor name), ``epochs`` times, waits for
    train_fn, and returns a ``TFModel`` with the shared params copied. ``args`` is
    ``tf_args`` merged with every param (params win). With
    ``setInputMode(InputMode.TENSORFLOW)`` nothing is fed: train_fn reads its own data
    (the DataFrame's TFRecords when ``tfrecord_dir`` is set).

    Examples
    --------
    >>> model = (TFEstimator(main_fun, args).setInputMapping({"x": "x", "y": "y"})
    ...          .setClusterSize(2).setEpochs(1).setExportDir("/tmp/export").fit(df))
    """

    train_fn = None
    export_fn = None

    def __init__(self, train_fn, tf_args, export_fn=None):
        super().__init__()
        if not callable(train_fn):
            raise InvalidArgumentError("train_fn", train_fn, "a function train_fn(args, ctx)")
        self.train_fn = train_fn
        self.args = Namespace(tf_args)
        if export_fn is not None:
            # TensorFlowOnSpark 2.x dropped it too: TF2 exports from train_fn
            log.warning("TFEstimator: export_fn is ignored; export the SavedModel in train_fn "
                        "(e.g. compat.export_saved_model or model.export on the chief)")
        self._setDefault(input_mapping={}, cluster_size=1, num_ps=0, driver_ps_nodes=False,
                         input_mode=InputMode.SPARK, master_node="chief", protocol="grpc",
                         tensorboard=False, model_dir=None, export_dir=None, tfrecord_dir=None,
                         batch_size=100, epochs=1, readers=1, steps=1000, grace_secs=30)

    def _fit(self, dataset):
        from pyspark import SparkContext

        from .. import _validate as check
        from .driver import run
        local_args = self.merge_args_params()
        mode = self.getInputMode()
        mapping = self.getInputMapping()
        input_cols = sorted(mapping)
        epochs = check.integer("epochs", self.getEpochs())
        grace_secs = check.integer("grace_secs", self.getGraceSecs(), minimum=0)
        cluster_size = check.integer("cluster_size", self.getClusterSize())
        if mode == InputMode.SPARK:
            if not mapping:
                raise InvalidArgumentError(
                    "input_mapping", mapping, "a dict {DataFrame column: tensor name} naming "
                    f"the columns to feed, from {dataset.columns}")
            _check_columns(dataset, mapping)
        else:
            self._tfrecords(dataset, local_args)
        tf_args = self.args.argv if self.args.argv else local_args
        cluster = run(SparkContext.getOrCreate(), self.train_fn, tf_args, cluster_size,
                      self.getNumPS(), self.getTensorboard(), mode,
                      master_node=self.getMasterNode(), driver_ps_nodes=self.getDriverPSNodes())
        try:
            if mode == InputMode.SPARK:
                cluster.train(dataset.select(*map(_quoted, input_cols)), epochs)
        except BaseException:
            try:  # the nodes' own failure, if any, is in the error raised below
                cluster.shutdown(grace_secs=0, timeout=30)
            except Exception as e:
                log.debug("TFEstimator: shutdown after a failed train(): %s", e)
            raise
        cluster.shutdown(grace_secs=grace_secs)
        return self._copyValues(TFModel(self.args))

    def _tfrecords(self, dataset, local_args: Any) -> None:
        """InputMode.TENSORFLOW: point ``args.tfrecord_dir`` at the DataFrame's
        TFRecords: where it was loaded from, or where it is written now."""
        loaded = sys.modules.get(f"{__package__}.dfutil")  # not imported: nothing loaded
        if loaded is not None and loaded.isLoadedDF(dataset):
            local_args.tfrecord_dir = loaded.loadedDF[dataset]
        elif local_args.tfrecord_dir:
            dfutil = importlib.import_module(".dfutil", __package__)
            mapping = self.getInputMapping()
            if mapping:
                _check_columns(dataset, mapping)
                dataset = dataset.select(*map(_quoted, sorted(mapping)))
            log.info("TFEstimator: writing the DataFrame as TFRecords to %s",
                     local_args.tfrecord_dir)
            dfutil.saveAsTFRecords(dataset, local_args.tfrecord_dir)


# -- the model -------------------------------------------------------------------
class TFModel(Model, TFParams, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir,
              HasExportDir, HasSignatureDefKey, HasTagSet):
    """A Spark ML Model backed by a SavedModel in ``export_dir``.

    ``transform(df)`` gives a DataFrame of the ``output_mapping`` columns only (in
    the order of their signature output names), one row per input row, in order.
    ``input_mapping`` is ``{DataFrame column: signature input}``, ``output_mapping``
    ``{signature output: DataFrame column}``. A flat array column is reshaped to
    the input's shape when the sizes agree. An output of shape ``[batch]`` becomes a
    scalar column (float32 -> float, float64 -> double, integers -> long, bool ->
    boolean, string -> binary); each further dimension is one level of array.

    Examples
    --------
    >>> preds = (TFModel(args).setExportDir("/tmp/export").setTagSet("serve")
    ...          .setSignatureDefKey("serving_default").setInputMapping({"image": "features"})
    ...          .setOutputMapping({"output_0": "prediction"}).transform(df))
    """

    def __init__(self, tf_args):
        super().__init__()
        self.args = Namespace(tf_args)
        self._setDefault(input_mapping={}, output_mapping={}, batch_size=100, model_dir=None,
                         export_dir=None, signature_def_key=None, tag_set=None)

    def _transform(self, dataset):
        plan = self.plan(dataset)
        return dataset.select(*map(_quoted, plan.input_columns)).mapInArrow(
            functools.partial(transform_partition, plan), plan.spark_schema())

    def plan(self, dataset) -> "InferencePlan":
        """What transform() runs, checked against ``dataset`` and the SavedModel's
        signature; raises InvalidArgumentError before any Spark job."""
        from .. import _validate as check
        batch_size = check.integer("batch_size", self.getBatchSize())
        in_map, out_map = self.getInputMapping(), self.getOutputMapping()
        if not in_map:
            raise InvalidArgumentError("input_mapping", in_map, "a dict {DataFrame column: "
                                       f"signature input}} with columns from {dataset.columns}")
        if not out_map:
            raise InvalidArgumentError("output_mapping", out_map,
                                       "a dict {signature output: new DataFrame column}")
        _check_columns(dataset, in_map)
        sig = read_signature(self.getExportDir(), self.getTagSet(), self.getSignatureDefKey())
        unknown = sorted(t for t in in_map.values() if t not in sig.inputs)
        if unknown:
            raise InvalidArgumentError(
                "input_mapping", in_map, f"values that are inputs of signature "
                f"{sig.signature_def_key!r}: {sorted(sig.inputs)}",
                hint=f"{', '.join(map(repr, unknown))} is not one of them")
        missing = sorted(set(sig.inputs) - set(in_map.values()))
        if missing:
            raise InvalidArgumentError(
                "input_mapping", in_map, f"a column for every input of signature "
                f"{sig.signature_def_key!r}", hint=f"nothing feeds {', '.join(map(repr, missing))}")
        unknown = sorted(t for t in out_map if t not in sig.outputs)
        if unknown:
            raise InvalidArgumentError(
                "output_mapping", out_map, f"keys that are outputs of signature "
                f"{sig.signature_def_key!r}: {sorted(sig.outputs)}",
                hint=f"{', '.join(map(repr, unknown))} is not one of them")
        columns = [c for _, c in sorted(out_map.items())]
        if len(set(columns)) != len(columns) or not all(isinstance(c, str) and c
                                                        for c in columns):
            raise InvalidArgumentError("output_mapping", out_map,
                                       "distinct, non-empty column names as values")
        inputs = [InputSpec(col, name, *sig.inputs[name]) for col, name in sorted(in_map.items())]
        outputs = [OutputSpec(name, col, *_output_kind(name, *sig.outputs[name]))
                   for name, col in sorted(out_map.items())]
        return InferencePlan(sig.export_dir, sig.tags, sig.signature_def_key, sig.fingerprint,
                             batch_size, inputs, outputs)


def _quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


def _check_columns(dataset, mapping: dict) -> None:
    missing = [c for c in sorted(mapping) if c not in dataset.columns]
    if missing:
        raise InvalidArgumentError(
            "input_mapping", mapping, f"keys that are columns of the DataFrame: {dataset.columns}",
            hint=f"column {', '.join(map(repr, missing))} is not in the DataFrame")


# -- the SavedModel's signature, read on the driver --------------------------------
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class Signature:
    export_dir: str
    tags: Tuple[str, ...]
    signature_def_key: str
    fingerprint: str
    inputs: Dict[str, Tuple[int, Optional[Tuple[int, ...]]]]   # name: (dtype enum, dims)
    outputs: Dict[str, Tuple[int, Optional[Tuple[int, ...]]]]


def _absolute(path: str) -> str:
    """A local path made absolute against the driver's working dir: the executors
    load it from their own working dirs."""
    return path if "://" in path else os.path.abspath(path)


def read_signature(export_dir: Optional[str], tag_set: Optional[str],
                   signature_def_key: Optional[str]) -> Signature:
    """The signature ``signature_def_key`` (None: 'serving_default') of the
    metagraph tagged ``tag_set`` (comma-delimited; None: the only one), read from
    ``saved_model.pb`` without TensorFlow: the driver needs none."""
    if not export_dir:
        raise InvalidArgumentError("export_dir", export_dir,
                                   "the directory of an exported SavedModel (setExportDir)")
    export_dir = _absolute(export_dir)
    raw = _read(_join(export_dir, "saved_model.pb"))
    if raw is None:
        what = _listing(export_dir)
        raise InvalidArgumentError(
            "export_dir", export_dir, "a directory holding a SavedModel (saved_model.pb)",
            hint="the directory does not exist" if what is None else f"it holds {what}")
    digest = hashlib.sha256(raw)
    index = _read(_join(export_dir, "variables", "variables.index"))
    digest.update(index or b"")  # a checksum of every variable: new weights, new key
    graphs: Dict[Tuple[str, ...], dict] = {}
    for num, meta in _fields(raw):
        if num == 2:  # SavedModel.meta_graphs
            graph = _meta_graph(meta)
            graphs[graph[0]] = graph[1]
    available = [",".join(t) for t in graphs]
    if tag_set is None:
        if len(graphs) != 1:
            raise InvalidArgumentError("tag_set", tag_set,
                                       f"one of the SavedModel's tag sets {available}")
        tags = next(iter(graphs))
    else:
        tags = tuple(sorted(t.strip() for t in tag_set.split(",") if t.strip()))
        if tags not in graphs:
            raise InvalidArgumentError("tag_set", tag_set,
                                       f"one of the SavedModel's tag sets {available}")
    key = signature_def_key or DEFAULT_SIGNATURE
    sigs = graphs[tags]
    if key not in sigs:
        raise InvalidArgumentError("signature_def_key", signature_def_key,
                                   f"a signature of {export_dir}: {sorted(sigs)}")
    return Signature(export_dir, tags, key, digest.hexdigest()[:16], *sigs[key])


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _read(path: str) -> Optional[bytes]:
    """A file's bytes (local or any filesystem fsspec reaches); None if missing."""
    try:
        if "://" not in path:
            with open(path, "rb") as f:
                return f.read()
        import fsspec
        with fsspec.open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _listing(path: str) -> Optional[List[str]]:
    try:
        if "://" not in path:
            return sorted(os.listdir(path))[:10]
        import fsspec
        fs, root = fsspec.core.url_to_fs(path)
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))[:10]
    except (FileNotFoundError, NotADirectoryError):
        return None


# Reading saved_model.pb: the protobuf wire format, only the fields a signature needs
# (tensorflow/core/protobuf/{saved_model,meta_graph}.proto)
def _varint(buf, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf) -> Iterator[Tuple[int, Any]]:
    """(field number, value) of a message: ints for varints, memoryviews for the rest."""
    buf = memoryview(buf)
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise InvalidArgumentError("export_dir", "saved_model.pb", "a valid SavedModel",
                                       hint=f"unexpected protobuf wire type {wire}")
        yield key >> 3, value


def _map_entries(buf) -> Tuple[str, Any]:
    key, value = "", b""
    for num, v in _fields(buf):
        if num == 1:
            key = bytes(v).decode()
        elif num == 2:
            value = v
    return key, value


def _meta_graph(buf) -> Tuple[Tuple[str, ...], dict]:
    """(sorted tags, {signature key: (inputs, outputs)}) of a MetaGraphDef."""
    tags: List[str] = []
    signatures = {}
    for num, value in _fields(buf):
        if num == 1:  # meta_info_def
            tags += [bytes(v).decode() for n, v in _fields(value) if n == 4]
        elif num == 5:  # signature_def map
            key, sig = _map_entries(value)
            inputs: Dict[str, Any] = {}
            outputs: Dict[str, Any] = {}
            for n, v in _fields(sig):
                if n in (1, 2):
                    name, info = _map_entries(v)
                    (inputs if n == 1 else outputs)[name] = _tensor_info(info)
            signatures[key] = (inputs, outputs)
    return tuple(sorted(tags)), signatures


def _tensor_info(buf) -> Tuple[int, Optional[Tuple[int, ...]]]:
    """(DataType enum, dims with -1 for unknown; None: unknown rank) of a TensorInfo."""
    dtype, dims, unknown = 0, [], False
    for num, value in _fields(buf):
        if num == 2:
            dtype = value
        elif num == 3:  # TensorShapeProto
            for n, v in _fields(value):
                if n == 2:
                    size = next((s for k, s in _fields(v) if k == 1), 0)
                    dims.append(size - (1 << 64) if size >= 1 << 63 else size)
                elif n == 3:
                    unknown = bool(v)
    return dtype, None if unknown else tuple(dims)


# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> Spark type
_ELEMENT = {1: "float", 19: "float", 14: "float", 2: "double", 10: "boolean", 7: "binary",
            **{n: "long" for n in (3, 4, 5, 6, 9, 17, 22, 23)}}
_DTYPE_NAMES = {0: "invalid (a sparse or composite tensor)", 8: "complex64",
                18: "complex128", 20: "resource", 21: "variant"}


def _output_kind(name: str, dtype: int, dims: Optional[Tuple[int, ...]]) -> Tuple[str, int]:
    """(Spark element type, array depth) of a signature output, one value per row."""
    if dims is None or len(dims) == 0:
        raise InvalidArgumentError(
            "output_mapping", name, "signature outputs with a batch dimension",
            hint=f"output {name!r} has shape {'unknown' if dims is None else '[]'}")
    if dtype not in _ELEMENT:
        raise InvalidArgumentError(
            "output_mapping", name, "outputs of float, integer, bool or string type",
            hint=f"output {name!r} is {_DTYPE_NAMES.get(dtype, f'DataType {dtype}')}")
    return _ELEMENT[dtype], len(dims) - 1


# -- what the executors run ------------------------------------------------------
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
    for size in reversed(value.shape[1:]):  # innermost first: one list level per dimension
        count = len(flat) // size if size else 0
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


__all__ = ["TFTypeConverters", "HasBatchSize", "HasClusterSize", "HasEpochs", "HasGraceSecs",
           "HasInputMapping", "HasInputMode", "HasMasterNode", "HasModelDir", "HasNumPS",
           "HasOutputMapping", "HasProtocol", "HasReaders", "HasSteps", "HasTensorboard",
           "HasTFRecordDir", "HasExportDir", "HasSignatureDefKey", "HasTagSet", "Namespace",
           "TFParams", "TFEstimator", "TFModel", "TF_VERSION", "yield_batch"]

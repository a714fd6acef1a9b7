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
import copy
import functools
import importlib
import importlib.metadata
import logging
import sys
from typing import Any, Optional

from pyspark.ml import Estimator, Model
from pyspark.ml.param.shared import Param, Params, TypeConverters

from ..errors import InvalidArgumentError
from .roles import InputMode
from .saved_model import _output_kind, read_signature
from .tfmodel_worker import (
    InferencePlan,
    InputSpec,
    OutputSpec,
    transform_partition,
    yield_batch,
)

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
        input_cols = sorted(mapping or {})
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


__all__ = ["TFTypeConverters", "HasBatchSize", "HasClusterSize", "HasEpochs", "HasGraceSecs",
           "HasInputMapping", "HasInputMode", "HasMasterNode", "HasModelDir", "HasNumPS",
           "HasOutputMapping", "HasProtocol", "HasReaders", "HasSteps", "HasTensorboard",
           "HasTFRecordDir", "HasExportDir", "HasSignatureDefKey", "HasTagSet", "Namespace",
           "TFParams", "TFEstimator", "TFModel", "TF_VERSION", "yield_batch"]

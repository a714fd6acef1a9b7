"""The Keras Estimator (Orca's ``Estimator.from_keras``).

``fit`` runs one worker per executor x ``workers_per_node`` as a TFCluster node,
fed like the PyTorch Estimator's (each worker its own executor's partitions,
stored once, replayed every epoch), or on the "ray" backend as a Ray actor fed
from Ray Datasets (``learn.ray_workers``); the workers train Keras 3 on its torch
backend with gradients averaged by one all-reduce (see ``worker``). ``evaluate`` and
``predict`` are plain Spark tasks with the broadcast weights, in whatever Keras
backend the executors' Python has; metric states are summed exactly.

The driver keeps the weights and the optimizer's variables (``.npz`` bytes)
between calls; ``get_model`` / ``save`` build the model on the driver.
"""

from __future__ import annotations

import base64
import functools
import logging
import types
from typing import Any, Optional

from ... import _validate as check
from ...errors import InvalidArgumentError
from .. import checkpoints, partitions
from ..data import (
    batch_arrays,
    check_batch_size,
    collected_batches,
    columns_for,
    feedable,
    is_creator,
    is_ray_dataset,
)
from ..spark_estimator import (
    FitInputs,
    Progress,
    SparkEstimator,
    check_backend,
    check_config,
    fit_inputs,
    output_column,
    spark_type_of,
)
from . import worker

log = logging.getLogger(__name__)

BACKENDS = ("spark",)


def _creator(name: str, value, what: str):
    if value is None:
        return None
    if not isinstance(value, (types.FunctionType, functools.partial)):
        raise InvalidArgumentError(name, value, f"a function {what}")
    return value


def _suffix(name: str, path) -> str:
    if not isinstance(path, str) or not path.endswith(worker.SAVED_SUFFIXES):
        raise InvalidArgumentError(name, path, "a path ending in .keras or .h5 (Keras 3 saves "
                                   "no other model format)",
                                   hint="save_checkpoint(path) keeps weights and optimizer "
                                   "state in any file")
    return ".h5" if path.endswith(".h5") else ".keras"


class KerasSparkEstimator(SparkEstimator):
    """``Estimator.from_keras(...)`` on either backend; see ``Estimator``."""

    def __init__(self, *, model_creator=None, config=None, compile_args_creator=None,
                 workers_per_node=1, model_dir=None, verbose=False, log_to_driver=True,
                 backend="spark"):
        check_backend(backend)
        config = check_config(config)
        self.source = worker.ModelSource(
            model_creator=_creator("model_creator", model_creator,
                                   "(config) -> a Keras model (compiled, or compiled with "
                                   "compile_args_creator)"),
            compile_args_creator=_creator("compile_args_creator", compile_args_creator,
                                          "(config) -> dict of Model.compile's arguments"),
            config=config)
        self.verbose = verbose
        self._state: Optional[bytes] = None
        super().__init__(workers_per_node=workers_per_node, model_dir=model_dir,
                         log_to_driver=log_to_driver, backend=backend)

    def _has_model(self) -> None:
        if self.source.model_creator is None and self.source.saved is None:
            raise InvalidArgumentError("model_creator", None, "a function (config) -> Keras "
                                       "model, or est.load(path) before this call")

    def _current_state(self) -> bytes:
        """The driver's copy of the weights (built from the source once)."""
        if self._state is None:
            self._has_model()
            self._state = worker.state_to_bytes(
                worker.model_state(self.source.build(None), 0))
        return self._state

    # -- fit ---------------------------------------------------------------------
    def fit(self, data, epochs=1, batch_size=32, verbose=1, callbacks=None,
            validation_data=None, class_weight=None, initial_epoch=0, steps_per_epoch=None,
            validation_steps=None, validation_freq=1, data_config=None, feature_cols=None,
            label_cols=None) -> dict:
        """Train with the optimizer, loss and metrics the model was compiled with;
        Keras' history as a dict of per-epoch lists (``loss``, each metric,
        ``val_*`` on validated epochs, plus ``num_samples``, ``seconds``,
        ``samples_per_sec``) with ``epochs`` and ``steps``, as Orca returned it.

        ``batch_size`` is the global batch (each of N workers takes batch_size // N);
        ``steps_per_epoch`` caps an epoch at that many steps (it ends earlier when
        the data does); validation reads every row once (``validation_steps`` is
        accepted and not needed).
        """
        self._has_model()
        callbacks = _keras_callbacks(callbacks)
        if class_weight is not None:
            raise InvalidArgumentError("class_weight", class_weight, "None")
        if steps_per_epoch is not None:
            steps_per_epoch = check.integer("steps_per_epoch", steps_per_epoch)
        if validation_steps is not None:
            validation_steps = check.integer("validation_steps", validation_steps)
        validation_freq = check.integer("validation_freq", validation_freq)
        if data_config is not None and not isinstance(data_config, dict):
            raise InvalidArgumentError("data_config", data_config, "None or a dict")
        inputs = fit_inputs(data, epochs, batch_size, feature_cols, label_cols,
                            validation_data, initial_epoch, self.epoch)
        plan = self._worker_plan(data, validation_data)
        job = self._job(inputs, plan, data_config, steps_per_epoch, validation_freq,
                        validation_steps=validation_steps if inputs.val_creator else None,
                        callbacks=callbacks)
        from pyspark import cloudpickle

        # the workers unpickle the job once they have chosen Keras' backend
        blob = cloudpickle.dumps(job)
        progress = Progress(inputs.first_epoch + inputs.epochs - 1, False, quiet=not verbose)
        result = self._run_workers(plan, worker.train_main, blob, inputs, data,
                                   validation_data, progress)
        self._state = base64.b64decode(result["state"])
        # the last epoch trained: a callback (EarlyStopping) may have ended fit sooner
        self.epoch = result["history"][-1]["epoch"] if result["history"] else self.epoch
        self.worker_digests = result["digests"]
        return _keras_history(result["history"], epochs, verbose)

    # -- evaluate / predict ----------------------------------------------------
    def evaluate(self, data, batch_size=32, num_steps=None, verbose=1, sample_weight=None,
                 callbacks=None, data_config=None, feature_cols=None,
                 label_cols=None) -> dict:
        """The compiled loss and metrics over all of ``data``, exactly (metric states
        summed over the partitions), as Orca named them: ``validation_<name>``. A
        DataFrame or Shards is evaluated by Spark tasks, a data creator's data by the
        workers (each its share; ``num_steps`` is accepted, every row is read)."""
        batch_size = check_batch_size(batch_size)
        for name, value in (("sample_weight", sample_weight), ("callbacks", callbacks)):
            if value is not None:
                raise InvalidArgumentError(name, value, "None")
        if is_creator(data):
            if num_steps is not None:
                num_steps = check.integer("num_steps", num_steps)
            return self._evaluate_on_workers(data, batch_size, data_config, num_steps)
        cols = columns_for(data, feature_cols, label_cols, need_labels=True)
        blob = self._shipped(data, self._current_state())
        body = functools.partial(worker.evaluate_partition, self.source, blob, cols,
                                 batch_size)
        try:
            parts = self._partition_stats(data, cols, body)
        finally:
            blob.unpersist()
        model = self.get_model()
        sample = _first_rows(data, cols)
        x = worker.model_inputs(batch_arrays(sample, cols.features))
        y = worker.model_inputs(batch_arrays(sample, cols.labels, labels=True))
        model.test_on_batch(x, y)  # builds the compiled metrics the states go into
        results = worker.set_metric_values(
            model, worker.sum_values([p["metrics"] for p in parts]))
        return {f"validation_{k}": v for k, v in results.items()}

    def _evaluate_on_workers(self, creator, batch_size: int, data_config, num_steps) -> dict:
        """evaluate(data creator): the creator's data is on the workers, so they
        evaluate it there (each its share), as fit's validation does."""
        self._has_model()
        plan = self._worker_plan(creator)
        inputs = FitInputs(self.epoch + 1, 0, batch_size, None, None, creator, False)
        job = self._job(inputs, plan, data_config, None, 1, evaluate_only=True,
                        validation_steps=num_steps)
        from pyspark import cloudpickle
        result = self._run_workers(plan, worker.train_main, cloudpickle.dumps(job), inputs,
                                   None, None, Progress(0, False, quiet=True))
        return {f"validation_{k}": v for k, v in result["results"].items()}

    def _job(self, inputs: FitInputs, plan, data_config, steps_per_epoch, validation_freq,
             evaluate_only: bool = False, validation_steps=None,
             callbacks: tuple = ()) -> worker.KerasJob:
        source = self.source
        if data_config:
            source = worker.ModelSource(**{**vars(source),
                                           "config": {**source.config, **data_config}})
        return worker.KerasJob(
            source=source, state=self._current_state(),
            **inputs.job_fields(self.model_dir, plan.threads), steps_per_epoch=steps_per_epoch,
            validation_freq=validation_freq, evaluate_only=evaluate_only,
            validation_steps=validation_steps, callbacks=callbacks)

    def predict(self, data, batch_size=32, verbose=1, steps=None, callbacks=None,
                data_config=None, feature_cols=None, output_cols=None):
        """``data`` with its predictions: a DataFrame gets a ``prediction`` column
        (double for one value per row, array<float> for several), Shards a
        "prediction" entry; rows stay in order. Lazy, as Spark transformations are."""
        batch_size = check_batch_size(batch_size)
        if callbacks is not None:
            raise InvalidArgumentError("callbacks", callbacks, "None")
        self._check_plain_data(data, "predict")
        cols = columns_for(data, feature_cols, None, need_labels=False)
        output = output_column(output_cols)
        blob = self._shipped(data, self._current_state())
        predictor = functools.partial(worker.predictor, self.source, blob)
        return self._predicted(
            data, cols, output,
            functools.partial(partitions.predict_partition, predictor, cols, batch_size, output),
            functools.partial(partitions.predict_shards, predictor, cols, batch_size),
            lambda batch: spark_type_of(partitions.squeezed(worker.predict_arrays(
                self.get_model(), batch_arrays(batch, cols.features)))))

    # -- the model ----------------------------------------------------------------
    def get_model(self, set_weights: bool = True):
        """The Keras model (in the driver's Keras backend) with the trained weights
        and optimizer state."""
        self._has_model()
        state = worker.state_from_bytes(self._current_state()) if set_weights else None
        return self.source.build(state)

    def save(self, filepath: str, overwrite: bool = True, include_optimizer: bool = True,
             **kwargs) -> str:
        """The model as a Keras file (``.keras`` or ``.h5``), on any fsspec path."""
        suffix = _suffix("filepath", filepath)
        if not overwrite:
            import fsspec
            fs, _, (found,) = fsspec.get_fs_token_paths(filepath)
            if fs.exists(found):
                raise InvalidArgumentError("filepath", filepath, "a path that does not exist "
                                           "(overwrite=False)")
        if suffix == ".h5":
            kwargs["include_optimizer"] = include_optimizer
        checkpoints.write_bytes(filepath, worker.save_to_bytes(self.get_model(), suffix,
                                                               **kwargs))
        return filepath

    def load(self, filepath: str, custom_objects=None, compile: bool = True) -> None:
        """A model ``save`` wrote (or any Keras 3 ``.keras`` / ``.h5`` file): its
        weights and optimizer state; without a model_creator the file also builds
        the workers' models."""
        suffix = _suffix("filepath", filepath)
        blob = checkpoints.read_bytes(filepath, "filepath", "a Keras model file")
        model = worker.load_saved(blob, suffix, custom_objects=custom_objects,
                                  compile=compile)
        if self.source.model_creator is None:
            self.source.saved, self.source.saved_suffix = blob, suffix
            self.source.custom_objects, self.source.compile_saved = custom_objects, compile
        self._state = worker.state_to_bytes(worker.model_state(model, self.epoch))

    def save_weights(self, filepath: str, overwrite: bool = True, **kwargs) -> str:
        """Keras' ``save_weights`` (a ``.weights.h5`` file), on any fsspec path."""
        import os
        import tempfile
        if not isinstance(filepath, str) or not filepath.endswith(".weights.h5"):
            raise InvalidArgumentError("filepath", filepath, "a path ending in .weights.h5")
        with tempfile.TemporaryDirectory(prefix="sparkorca-keras-") as tmp:
            local = os.path.join(tmp, "model.weights.h5")
            self.get_model().save_weights(local)
            with open(local, "rb") as f:
                checkpoints.write_bytes(filepath, f.read())
        return filepath

    def load_weights(self, filepath: str, **kwargs) -> None:
        import os
        import tempfile
        blob = checkpoints.read_bytes(filepath, "filepath", "a file save_weights() wrote")
        model = self.get_model(set_weights=False)
        with tempfile.TemporaryDirectory(prefix="sparkorca-keras-") as tmp:
            local = os.path.join(tmp, "model.weights.h5")
            with open(local, "wb") as f:
                f.write(blob)
            model.load_weights(local, **kwargs)
        self._state = worker.state_to_bytes(worker.model_state(model, self.epoch))

    def save_checkpoint(self, filepath: str) -> str:
        """Weights, optimizer variables and the epoch (``.npz``), any fsspec path."""
        checkpoints.write_bytes(filepath, self._current_state())
        return filepath

    def load_checkpoint(self, filepath: str) -> None:
        blob = checkpoints.read_bytes(filepath, "filepath", "a file save_checkpoint() or a "
                                      "fit with model_dir wrote")
        try:
            state = worker.state_from_bytes(blob)
        except Exception:
            raise InvalidArgumentError("filepath", filepath, "a file save_checkpoint() "
                                       "or a fit with model_dir wrote") from None
        self._state = blob
        self.epoch = state.epoch

    latest_checkpoint = staticmethod(checkpoints.latest_checkpoint)


def _keras_callbacks(callbacks) -> tuple:
    """fit's callbacks: Keras Callback instances (they run on the workers)."""
    if not callbacks:
        return ()
    import copy

    import keras
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    out = []
    for cb in items:
        if not isinstance(cb, keras.callbacks.Callback):
            raise InvalidArgumentError("callbacks", cb, "a list of keras.callbacks.Callback "
                                       "instances")
        if isinstance(cb, keras.callbacks.BackupAndRestore):
            raise InvalidArgumentError("callbacks", "BackupAndRestore", "other callbacks",
                                       hint="fit(model_dir=...) checkpoints every epoch; "
                                       "load_checkpoint() and fit(initial_epoch=k) resume")
        cb = copy.copy(cb)  # a callback used by a driver-side fit keeps that model
        if getattr(cb, "_model", None) is not None:
            cb._model = None
        out.append(cb)
    return tuple(out)


def _first_rows(data, cols) -> Any:
    """An Arrow batch of ``data``'s first row (features and labels)."""
    from pyspark.sql import DataFrame
    if is_ray_dataset(data):
        table = data.select_columns(list(cols.features + cols.labels)).take_batch(
            1, batch_format="pyarrow")
        batches = [b for b in table.combine_chunks().to_batches() if b.num_rows]
    elif isinstance(data, DataFrame):
        batches = collected_batches(data.select(*(cols.features + cols.labels)).limit(1))
    else:
        batches = feedable(data, cols).to_arrow_rdd().filter(lambda b: b.num_rows).take(1)
    if not batches:
        raise InvalidArgumentError("data", "no rows", "data with at least one row")
    return batches[0].slice(0, 1)


def _keras_history(per_epoch: list, epochs: int, verbose) -> dict:
    """Orca's fit result: Keras' History params and its per-epoch lists."""
    out: dict = {"verbose": verbose, "epochs": epochs,
                 "steps": per_epoch[-1]["steps"] if per_epoch else 0}
    for stats in per_epoch:
        for key, value in stats.items():
            if key not in ("epoch", "steps"):
                out.setdefault(key, []).append(value)
    return out

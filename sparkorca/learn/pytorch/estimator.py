"""The PyTorch Estimator (Orca's ``Estimator.from_torch``).

``fit`` runs one worker per executor x ``workers_per_node`` as a TFCluster node (the
node layer's supervised process, launched from a barrier Spark job), joined by torch
DDP over their own process group (learn.process_group); on the "ray" backend the
same worker runs as a Ray actor fed from Ray Datasets (``learn.ray_workers``).
DataFrames and Shards reach each worker through the TFCluster feed: a Spark job
streams every partition into the worker on its own executor as Arrow (no driver hop,
with backpressure); epochs after the first are replayed by the workers from
``OrcaContext.train_data_store``, so Spark computes the input once. ``evaluate`` and
``predict`` need no process group: one Spark task per partition with the broadcast
model state, statistics merged exactly.

The driver keeps the model state (``torch.save`` bytes of Orca's
``{"epoch", "models", "optimizers", "schedulers"}``) between calls.
"""

from __future__ import annotations

import base64
import functools
import logging
import types
from typing import Optional

from ... import _validate as check
from ...errors import InvalidArgumentError
from .. import checkpoints, partitions
from .. import metrics as metricmod
from ..data import batch_arrays, check_batch_size, columns_for, is_creator
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
from . import callbacks as callbacks_mod
from . import worker

log = logging.getLogger(__name__)

def _function(name: str, value, required: bool, what: str):
    if value is None and not required:
        return None
    if not isinstance(value, (types.FunctionType, functools.partial)):
        raise InvalidArgumentError(name, value, f"a function {what}")
    return value


def _loss(value):
    import torch
    if value is None or isinstance(value, torch.nn.Module) or is_creator(value):
        return value
    raise InvalidArgumentError("loss", value, "a torch loss instance such as nn.MSELoss(), or "
                               "a function (config) -> loss", hint="a loss class needs ()")


class PyTorchSparkEstimator(SparkEstimator):
    """``Estimator.from_torch(...)`` on either backend; see ``Estimator``."""

    def __init__(self, *, model, optimizer, loss, metrics=None, scheduler_creator=None,
                 config=None, workers_per_node=1, model_dir=None, use_tqdm=False,
                 sync_stats=True, log_to_driver=True, backend="spark"):
        check_backend(backend)
        config = check_config(config)
        model = _function("model", model, True, "(config) -> torch.nn.Module")
        self.creators = worker.Creators(
            model=model,
            optimizer=_function("optimizer", optimizer, False,
                                "(model, config) -> torch.optim.Optimizer"),
            loss=_loss(loss),
            scheduler=_function("scheduler_creator", scheduler_creator, False,
                                "(optimizer, config) -> an LR scheduler"),
            config=config)
        self.metrics = metricmod.resolve(metrics)
        self.use_tqdm = check.boolean("use_tqdm", use_tqdm)
        self.sync_stats = check.boolean("sync_stats", sync_stats)
        self._state: Optional[bytes] = None
        super().__init__(workers_per_node=workers_per_node, model_dir=model_dir,
                         log_to_driver=log_to_driver, backend=backend)

    def _initial_state(self) -> bytes:
        """The driver's copy of the model's state (built from the creator once)."""
        if self._state is None:
            model, _, _, _ = self.creators.build(None, train=False)
            self._state = worker.state_to_bytes(worker.make_state(0, model))
        return self._state

    # -- fit ---------------------------------------------------------------------
    def fit(self, data, epochs=1, batch_size=32, feature_cols=None, label_cols=None,
            validation_data=None, callbacks=None, checkpoint_trigger=None, initial_epoch=0,
            reduce_results=True) -> list:
        """Train ``epochs`` epochs; one stats dict per epoch (Orca's keys: epoch,
        num_samples, batch_count, train_loss, last_train_loss, val_* with
        validation_data; plus seconds and samples_per_sec).

        ``batch_size`` is the global batch: each of N workers takes batch_size // N.
        ``initial_epoch=k`` (Keras' meaning) trains epochs k+1 .. ``epochs``.
        """
        _reduced_only(reduce_results)
        callbacks = callbacks_mod.checked(callbacks)
        if checkpoint_trigger is not None and \
                type(checkpoint_trigger).__name__ != "EveryEpoch" and \
                str(checkpoint_trigger).lower() != "everyepoch":
            raise InvalidArgumentError("checkpoint_trigger", checkpoint_trigger,
                                       "None or EveryEpoch() (checkpoints every epoch under "
                                       "model_dir)")
        inputs = fit_inputs(data, epochs, batch_size, feature_cols, label_cols,
                            validation_data, initial_epoch, self.epoch)
        if self.creators.optimizer is None:
            raise InvalidArgumentError("optimizer", None, "a function (model, config) -> "
                                       "torch.optim.Optimizer (fit needs one)")
        if self.creators.loss is None:
            raise InvalidArgumentError("loss", None, "a torch loss (fit needs one)")
        plan = self._worker_plan(data, validation_data)
        job = worker.TrainJob(
            creators=self.creators, metrics=self.metrics, state=self._initial_state(),
            **inputs.job_fields(self.model_dir, plan.threads), callbacks=tuple(callbacks))
        progress = Progress(job.first_epoch + job.epochs - 1, self.use_tqdm)
        result = self._run_workers(plan, worker.train_main, job, inputs, data,
                                   validation_data, progress)
        self._state = base64.b64decode(result["state"])
        # the last epoch trained: a callback may have stopped fit sooner
        self.epoch = result["history"][-1]["epoch"] if result["history"] else self.epoch
        return result["history"]

    # -- evaluate / predict ----------------------------------------------------
    def evaluate(self, data, batch_size=32, feature_cols=None, label_cols=None,
                 num_steps=None, reduce_results=True) -> dict:
        """Loss (``val_loss``), every metric under its name, and ``num_samples``,
        computed exactly over all the data: one task per partition (or Ray Dataset
        block); a data creator's data by the workers, each its share."""
        batch_size = check_batch_size(batch_size)
        _reduced_only(reduce_results)
        if num_steps is not None:
            raise InvalidArgumentError("num_steps", num_steps, "None: evaluate reads all the data")
        if is_creator(data):
            return self._evaluate_on_workers(data, batch_size)
        cols = columns_for(data, feature_cols, label_cols, need_labels=True)
        blob = self._shipped(data, self._initial_state())
        body = functools.partial(worker.evaluate_partition, self.creators, blob, self.metrics,
                                 cols, batch_size)
        try:
            parts = self._partition_stats(data, cols, body)
        finally:
            blob.unpersist()
        return worker.Evaluation.result(self.metrics, parts, self.creators.loss is not None)

    def _evaluate_on_workers(self, creator, batch_size: int) -> dict:
        """evaluate(data creator): the creator's data is on the workers, so they
        evaluate it there (each its share), as fit's validation does."""
        plan = self._worker_plan(creator)
        inputs = FitInputs(self.epoch + 1, 0, batch_size, None, None, creator, False)
        job = worker.TrainJob(
            creators=self.creators, metrics=self.metrics, state=self._initial_state(),
            **inputs.job_fields(None, plan.threads), evaluate_only=True)
        result = self._run_workers(plan, worker.train_main, job, inputs, None, None,
                                   Progress(0, False, quiet=True))
        return result["results"]

    def predict(self, data, batch_size=32, feature_cols=None, output_cols=None):
        """``data`` with its predictions: a DataFrame gets a ``prediction`` column
        (double for one value per row, array<float> for several), Shards a
        "prediction" entry; rows stay in order. Lazy, as Spark transformations are."""
        batch_size = check_batch_size(batch_size)
        self._check_plain_data(data, "predict")
        cols = columns_for(data, feature_cols, None, need_labels=False)
        output = output_column(output_cols)
        blob = self._shipped(data, self._initial_state())
        predictor = functools.partial(worker.predictor, self.creators, blob)
        return self._predicted(
            data, cols, output,
            functools.partial(partitions.predict_partition, predictor, cols, batch_size, output),
            functools.partial(partitions.predict_shards, predictor, cols, batch_size),
            lambda batch: spark_type_of(partitions.squeezed(worker.predict_arrays(
                self.get_model().eval(), batch_arrays(batch, cols.features)))))

    # -- the model ----------------------------------------------------------------
    def get_state_dict(self) -> dict:
        return worker.state_from_bytes(self._initial_state())

    def get_model(self):
        """A plain ``torch.nn.Module`` with the trained weights."""
        model, _, _, _ = self.creators.build(self.get_state_dict(), train=False)
        return model

    def save(self, model_path: str, entire: bool = False) -> str:
        """Orca's state file (``torch.save`` of {epoch, models, optimizers,
        schedulers}); ``entire=True``: the whole module. Any fsspec path."""
        import io

        import torch
        if entire:
            buf = io.BytesIO()
            torch.save(self.get_model(), buf)
            blob = buf.getvalue()
        else:
            blob = self._initial_state()
        checkpoints.write_bytes(model_path, blob)
        return model_path

    def load(self, model_path: str) -> None:
        """Load what ``save`` wrote (or a whole module saved with entire=True)."""
        blob = checkpoints.read_bytes(model_path, "model_path", "a file save() wrote")
        try:
            state = worker.state_from_bytes(blob)
        except Exception:
            import io

            import torch
            module = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
            if not isinstance(module, torch.nn.Module):
                raise InvalidArgumentError("model_path", model_path,
                                           "a file Estimator.save() wrote") from None
            state = worker.make_state(0, module)
        if not isinstance(state, dict) or "models" not in state:
            raise InvalidArgumentError("model_path", model_path, "a file Estimator.save() wrote")
        self._state = worker.state_to_bytes(state)
        self.epoch = int(state.get("epoch", 0))

    save_checkpoint = save

    def load_checkpoint(self, filepath: str) -> None:
        self.load(filepath)

    latest_checkpoint = staticmethod(checkpoints.latest_checkpoint)


def _reduced_only(reduce_results) -> None:
    if reduce_results is not True:
        raise InvalidArgumentError("reduce_results", reduce_results,
                                   "True: statistics are computed once over all workers")

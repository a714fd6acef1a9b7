"""The PyTorch Estimator on the Spark backend (Orca's ``Estimator.from_torch``).

``fit`` runs one worker per executor x ``workers_per_node`` as a TFCluster node
(the node layer's supervised process, launched from a barrier Spark job), joined
by torch DDP over gloo. DataFrames and Shards reach each worker through the
TFCluster feed: a Spark job streams every partition into the worker on its own
executor as Arrow (no driver hop, with backpressure); epochs after the first are
replayed by the workers from ``OrcaContext.train_data_store``, so Spark computes
the input once. ``evaluate`` and ``predict`` need no process group: one Spark task
per partition with the broadcast model state, statistics merged exactly.

The driver keeps the model state (``torch.save`` bytes of Orca's
``{"epoch", "models", "optimizers", "schedulers"}``) between calls.
"""

from __future__ import annotations

import base64
import functools
import logging
import sys
import types
from typing import Any, Optional

from ... import _validate as check
from ... import context
from ...errors import InvalidArgumentError, NoContextError, OrcaRuntimeError
from ...spark.session import is_local_master
from .. import metrics as metricmod
from ..data import (
    Columns,
    check_batch_size,
    check_epochs,
    columns_for,
    feedable,
    is_creator,
)
from . import worker

log = logging.getLogger(__name__)

BACKENDS = ("spark",)
_FIT_TIMEOUT = 7 * 24 * 3600.0


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


class PyTorchSparkEstimator:
    """``Estimator.from_torch(..., backend="spark")``; see ``Estimator``."""

    def __init__(self, *, model, optimizer, loss, metrics=None, scheduler_creator=None,
                 config=None, workers_per_node=1, model_dir=None, use_tqdm=False,
                 sync_stats=True, log_to_driver=True):
        config = {} if config is None else config
        if not isinstance(config, dict):
            raise InvalidArgumentError("config", config, "a dict passed to every creator")
        if "batch_size" in config:
            raise InvalidArgumentError("config", "a 'batch_size' entry",
                                       "a config without batch_size: pass fit(batch_size=...)")
        model = _function("model", model, True, "(config) -> torch.nn.Module")
        creators = worker.Creators(
            model=model,
            optimizer=_function("optimizer", optimizer, False,
                                "(model, config) -> torch.optim.Optimizer"),
            loss=_loss(loss),
            scheduler=_function("scheduler_creator", scheduler_creator, False,
                                "(optimizer, config) -> an LR scheduler"),
            config=dict(config))
        self.creators = creators
        self.metrics = metricmod.resolve(metrics)
        self.workers_per_node = check.integer("workers_per_node", workers_per_node)
        if model_dir is not None and not isinstance(model_dir, str):
            raise InvalidArgumentError("model_dir", model_dir, "None or a directory path or URL")
        self.model_dir = model_dir
        self.use_tqdm = check.boolean("use_tqdm", use_tqdm)
        self.sync_stats = check.boolean("sync_stats", sync_stats)
        self.log_to_driver = check.boolean("log_to_driver", log_to_driver)
        self.epoch = 0
        self._state: Optional[bytes] = None
        self._shut = False
        context.on_stop(self.shutdown)

    # -- where it runs ---------------------------------------------------------
    def _sc(self):
        if self._shut:
            raise OrcaRuntimeError("this Estimator has been shut down")
        running = context.current()
        if running is None or running.sc is None:
            raise NoContextError("the Estimator's spark backend needs a running context: "
                                 "init_orca_context(...) first")
        return running.sc

    def _num_workers(self, sc) -> int:
        from ...spark.session import expected_executors, registered_executors
        if is_local_master(sc):
            nodes = 1
        else:
            nodes = expected_executors(sc) or registered_executors(sc) or 1
        return nodes * self.workers_per_node

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
        epochs = check_epochs(epochs)
        batch_size = check_batch_size(batch_size)
        _reduced_only(reduce_results)
        if callbacks:
            raise InvalidArgumentError("callbacks", callbacks, "None",
                                       hint="per-epoch stats come back from fit(); "
                                       "checkpoints go to model_dir")
        if checkpoint_trigger is not None and \
                type(checkpoint_trigger).__name__ != "EveryEpoch" and \
                str(checkpoint_trigger).lower() != "everyepoch":
            raise InvalidArgumentError("checkpoint_trigger", checkpoint_trigger,
                                       "None or EveryEpoch() (checkpoints every epoch under "
                                       "model_dir)")
        initial_epoch = check.integer("initial_epoch", initial_epoch, minimum=0)
        if initial_epoch:
            if initial_epoch >= epochs:
                raise InvalidArgumentError("initial_epoch", initial_epoch,
                                           f"an epoch below epochs={epochs}")
            first, count = initial_epoch + 1, epochs - initial_epoch
        else:
            first, count = self.epoch + 1, epochs
        if self.creators.optimizer is None:
            raise InvalidArgumentError("optimizer", None, "a function (model, config) -> "
                                       "torch.optim.Optimizer (fit needs one)")
        if self.creators.loss is None:
            raise InvalidArgumentError("loss", None, "a torch loss (fit needs one)")
        creator = is_creator(data)
        cols: Optional[Columns] = None
        if creator:
            if validation_data is not None and not is_creator(validation_data):
                raise InvalidArgumentError("validation_data", type(validation_data).__name__,
                                           "a data creator, as data is one")
        else:
            cols = columns_for(data, feature_cols, label_cols, need_labels=True)
            if validation_data is not None:
                if is_creator(validation_data):
                    raise InvalidArgumentError("validation_data", "a data creator",
                                               f"the same kind as data ({type(data).__name__})")
                columns_for(validation_data, feature_cols, label_cols, need_labels=True,
                            what="validation_data")
        sc = self._sc()
        n = self._num_workers(sc)
        self._check_slots(sc, n)
        job = worker.TrainJob(
            creators=self.creators, metrics=self.metrics, state=self._initial_state(),
            first_epoch=first, epochs=count, batch_size=batch_size, cols=cols,
            data_creator=data if creator else None,
            val_creator=validation_data if creator else None,
            has_val=validation_data is not None and not creator, model_dir=self.model_dir,
            threads=max(1, _cores_per_node(sc) // self.workers_per_node))
        result = self._run_workers(sc, n, job, data, validation_data, cols)
        self._state = base64.b64decode(result["state"])
        self.epoch = first + count - 1
        return result["history"]

    def _check_slots(self, sc, n: int) -> None:
        from ...cluster.driver import task_slots
        slots = task_slots(sc)
        if slots is not None and n > slots:
            raise InvalidArgumentError(
                "workers_per_node", self.workers_per_node,
                f"at most {max(1, slots // max(1, n // self.workers_per_node))}: {n} workers "
                f"need {n} task slots at once and the application has {slots}")

    def _run_workers(self, sc, n: int, job, data, validation_data, cols) -> dict:
        from ...cluster import driver
        from ...cluster.roles import InputMode
        mode = InputMode.TENSORFLOW if cols is None else InputMode.SPARK
        queues = ("input", "val") if job.has_val else ("input",)
        progress = _Progress(job.first_epoch + job.epochs - 1, self.use_tqdm)
        cluster = driver.run(sc, worker.train_main, job, num_executors=n, input_mode=mode,
                             queues=queues, reservation_timeout=600)
        cluster.server.on_progress = lambda link, body: progress.epoch(body.get("stats", {}))
        try:
            if cols is not None:
                if job.has_val:
                    cluster.feed_stored(feedable(validation_data, cols), 1, _FIT_TIMEOUT, "val")
                cluster.feed_stored(feedable(data, cols, n), job.epochs, _FIT_TIMEOUT, "input")
            cluster.shutdown()
        except BaseException:
            cluster._stop_nodes()
            raise
        finally:
            progress.close()
        results = [link.result for link in cluster.server.nodes.values()
                   if link.result is not None]
        if not results:
            raise OrcaRuntimeError("Estimator.fit: the workers ended without rank 0's result")
        return results[0]

    # -- evaluate / predict ----------------------------------------------------
    def _broadcast_state(self, sc):
        return sc.broadcast(self._initial_state())

    def evaluate(self, data, batch_size=32, feature_cols=None, label_cols=None,
                 num_steps=None, reduce_results=True) -> dict:
        """Loss (``val_loss``), every metric under its name, and ``num_samples``,
        computed exactly over all the data, one Spark task per partition."""
        import json
        batch_size = check_batch_size(batch_size)
        _reduced_only(reduce_results)
        if num_steps is not None:
            raise InvalidArgumentError("num_steps", num_steps, "None: evaluate reads all the data")
        if is_creator(data):
            raise InvalidArgumentError("data", "a data creator", "a Spark DataFrame or "
                                       "sparkorca.data Shards (evaluate runs on Spark tasks)")
        cols = columns_for(data, feature_cols, label_cols, need_labels=True)
        sc = self._sc()
        blob = self._broadcast_state(sc)
        body = functools.partial(worker.evaluate_partition, self.creators, blob, self.metrics,
                                 cols, batch_size)
        fed = feedable(data, cols)
        try:
            if hasattr(fed, "to_arrow_rdd"):
                rows = fed.to_arrow_rdd().mapPartitions(
                    lambda it: (r for b in body(it) for r in b.column(0).to_pylist())).collect()
            else:
                rows = [r.stats for r in fed.mapInArrow(body, "stats string").collect()]
        finally:
            blob.unpersist()
        parts = [json.loads(r) for r in rows]
        return worker.Evaluation.result(self.metrics, parts, self.creators.loss is not None)

    def predict(self, data, batch_size=32, feature_cols=None, output_cols=None):
        """``data`` with its predictions: a DataFrame gets a ``prediction`` column
        (double for one value per row, array<float> for several), Shards a
        "prediction" entry; rows stay in order. Lazy, as Spark transformations are."""
        from pyspark.sql import DataFrame
        batch_size = check_batch_size(batch_size)
        if is_creator(data):
            raise InvalidArgumentError("data", "a data creator",
                                       "a Spark DataFrame or sparkorca.data Shards")
        cols = columns_for(data, feature_cols, None, need_labels=False)
        output = "prediction"
        if output_cols is not None:
            names = [output_cols] if isinstance(output_cols, str) else list(output_cols)
            if len(names) != 1 or not isinstance(names[0], str):
                raise InvalidArgumentError("output_cols", output_cols, "one column name")
            output = names[0]
        sc = self._sc()
        blob = self._broadcast_state(sc)
        if isinstance(data, DataFrame):
            if output in data.columns:
                raise InvalidArgumentError("output_cols", output,
                                           f"a name not among the columns {data.columns}")
            from pyspark.sql.types import StructField, StructType

            # a new schema: StructType.add would change the DataFrame's own
            schema = StructType(list(data.schema.fields) +
                                [StructField(output, self._prediction_type(data, cols))])
            body = functools.partial(worker.predict_partition, self.creators, blob, cols,
                                     batch_size, output)
            return data.mapInArrow(body, schema)
        # one model per partition, as for DataFrames
        body = functools.partial(worker.predict_shards, self.creators, blob, cols, batch_size)
        return data._child(data.rdd.mapPartitions(body))

    def _prediction_type(self, df, cols: Columns):
        """The prediction column's Spark type, from the model's output for one row."""
        from pyspark.sql.types import ArrayType, DoubleType, FloatType

        from ..data import batch_arrays
        batches = df.select(*cols.features).limit(1)._collect_as_arrow()
        batches = [b for b in batches if b.num_rows]
        if not batches:
            return DoubleType()
        model, _, _, _ = self.creators.build(worker.state_from_bytes(self._initial_state()),
                                             train=False)
        model.eval()
        pred = worker.predict_arrays(model, batch_arrays(batches[0], cols.features))
        out: Any = DoubleType() if pred.ndim == 1 else FloatType()
        for _ in range(pred.ndim - 1):
            out = ArrayType(out)
        return out

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
        worker.write_checkpoint(model_path, blob)
        return model_path

    def load(self, model_path: str) -> None:
        """Load what ``save`` wrote (or a whole module saved with entire=True)."""
        import fsspec
        try:
            with fsspec.open(model_path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise InvalidArgumentError("model_path", model_path, "a file save() wrote") from None
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

    def shutdown(self, force: bool = False) -> None:
        """Nothing runs between calls (every fit's workers end with it); later calls
        raise."""
        self._shut = True

    @staticmethod
    def latest_checkpoint(checkpoint_dir: str) -> str:
        import fsspec
        path = f"{checkpoint_dir.rstrip('/')}/last.ckpt"
        fs, _, (found,) = fsspec.get_fs_token_paths(path)
        if not fs.exists(found):
            raise InvalidArgumentError("checkpoint_dir", checkpoint_dir,
                                       "a model_dir a fit() wrote checkpoints to")
        return path


def _reduced_only(reduce_results) -> None:
    if reduce_results is not True:
        raise InvalidArgumentError("reduce_results", reduce_results,
                                   "True: statistics are computed once over all workers")


def _cores_per_node(sc) -> int:
    conf = sc.getConf()
    if is_local_master(sc):
        return sc.defaultParallelism
    return int(conf.get("spark.executor.cores", "1"))


class _Progress:
    """One line per epoch on the driver (a tqdm bar with use_tqdm in a terminal)."""

    def __init__(self, last_epoch: int, use_tqdm: bool):
        self.bar = None
        if use_tqdm:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=last_epoch, unit="epoch")
            except ImportError:
                pass

    def epoch(self, stats: dict) -> None:
        keys = [k for k in stats if k.endswith("loss") or k.startswith("val_")]
        shown = ", ".join(f"{k}={stats[k]:.4g}" for k in keys
                          if isinstance(stats.get(k), float))
        line = (f"epoch {stats.get('epoch')}: {shown}, "
                f"{stats.get('samples_per_sec', 0):,.0f} samples/s, {stats.get('seconds', 0):.1f}s")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(shown)
        else:
            print(line, file=sys.stdout, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()



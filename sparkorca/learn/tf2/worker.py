"""The Keras Estimator on the executors: the training worker (a TFCluster node's
map_fun, one per worker), and the evaluate / predict functions Spark runs on each
partition.

Keras 3's ``Model.fit`` does not run under MultiWorkerMirroredStrategy
(keras-team/keras#20585), so the workers train Keras on its **torch backend**: each
worker runs the model's own compiled train step (its optimizer, loss and metrics),
and the optimizer's ``apply`` first averages the gradients over all workers with
one all-reduce (weighted by the rows each worker had in the step). Every
worker takes part in every step, idle when its data for the epoch has run out, so
workers with uneven data stay in step and their weights stay identical. Metric
states (totals and counts, confusion counts, ...) are summed over the workers at
the end of an epoch: the reported values are exact, as if one process had seen
all the data. Nothing between workers or to the driver is pickled: raw tensors
over authenticated connections, JSON, and weights as ``.npz`` read with ``allow_pickle=False``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
from typing import Any, Callable, Iterator, List, Optional

import numpy as np

from ..checkpoints import epoch_checkpoints
from ..data import Columns, batch_arrays
from ..partitions import WorkerJob, chunks, feed_batches
from ..process_group import gather_json, worker_group

SAVED_SUFFIXES = (".keras", ".h5")


@dataclasses.dataclass
class KerasState:
    """A model's weights and its optimizer's variables, in Keras' order."""

    epoch: int
    weights: List[np.ndarray]
    optimizer: List[np.ndarray]


def state_to_bytes(state: KerasState) -> bytes:
    arrays: dict = {"epoch": np.int64(state.epoch)}
    arrays.update({f"w{i}": np.asarray(w) for i, w in enumerate(state.weights)})
    arrays.update({f"o{i}": np.asarray(v) for i, v in enumerate(state.optimizer)})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> KerasState:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        names = set(z.files)
        weights = [z[f"w{i}"] for i in range(sum(n[0] == "w" for n in names))]
        opt = [z[f"o{i}"] for i in range(sum(n[0] == "o" for n in names))]
        return KerasState(int(z["epoch"]), weights, opt)


def model_state(model, epoch: int) -> KerasState:
    store: dict = {}
    if model.optimizer is not None and model.optimizer.built:
        model.optimizer.save_own_variables(store)
    return KerasState(epoch, [np.asarray(w) for w in model.get_weights()],
                      [np.asarray(store[str(i)]) for i in range(len(store))])


def restore(model, state: KerasState) -> None:
    model.set_weights(state.weights)
    optimizer = model.optimizer
    if state.optimizer and optimizer is not None:
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        if len(optimizer.variables) == len(state.optimizer):
            optimizer.load_own_variables({str(i): v for i, v in enumerate(state.optimizer)})
        else:
            import logging
            logging.getLogger(__name__).warning(
                "the optimizer's state was not restored: it has %d variables, the saved "
                "state %d (a different optimizer?)", len(optimizer.variables),
                len(state.optimizer))


def load_saved(blob: bytes, suffix: str, custom_objects=None, compile: bool = True):
    """A Keras model from the bytes of a ``.keras`` / ``.h5`` file."""
    import keras
    with tempfile.TemporaryDirectory(prefix="sparkorca-keras-") as tmp:
        path = os.path.join(tmp, "model" + suffix)
        with open(path, "wb") as f:
            f.write(blob)
        return keras.models.load_model(path, custom_objects=custom_objects, compile=compile)


def save_to_bytes(model, suffix: str, **kwargs) -> bytes:
    with tempfile.TemporaryDirectory(prefix="sparkorca-keras-") as tmp:
        path = os.path.join(tmp, "model" + suffix)
        model.save(path, **kwargs)
        with open(path, "rb") as f:
            return f.read()


@dataclasses.dataclass
class ModelSource:
    """What builds the model: Orca's ``model_creator(config)`` (compiled, or compiled
    with ``compile_args_creator(config)``), or a saved model file's bytes."""

    model_creator: Optional[Callable]
    compile_args_creator: Optional[Callable]
    config: dict
    saved: Optional[bytes] = None
    saved_suffix: str = ".keras"
    custom_objects: Optional[dict] = None
    compile_saved: bool = True

    def build(self, state: Optional[KerasState]):
        if self.model_creator is not None:
            model = self.model_creator(self.config)
        else:
            assert self.saved is not None  # the Estimator checks it has one or the other
            model = load_saved(self.saved, self.saved_suffix, self.custom_objects,
                               self.compile_saved)
        if not getattr(model, "compiled", False) and self.compile_args_creator is not None:
            model.compile(**self.compile_args_creator(self.config))
        if state is not None:
            restore(model, state)
        return model


@dataclasses.dataclass(kw_only=True)
class KerasJob(WorkerJob):
    """callbacks: Keras', run on the workers (see Callbacks)."""

    source: ModelSource
    state: bytes
    steps_per_epoch: Optional[int]
    validation_freq: int
    validation_steps: Optional[int] = None  # a cap for a creator's (maybe endless) dataset


# -- a model on batches ---------------------------------------------------------------
def model_inputs(arrays: List[np.ndarray]):
    """Several feature columns are several inputs (a list), one is the array."""
    return arrays[0] if len(arrays) == 1 else list(arrays)


def rows_of(x) -> int:
    import keras
    leaves = keras.tree.flatten(x)
    return int(len(leaves[0])) if leaves else 0


def metric_values(model) -> dict:
    """The model's metric states (position -> flat float64 list): sums of them over
    workers or partitions are the states of all the data. Keyed by position, not by
    path: unnamed metrics get process-dependent names (auc_1, ...); a model whose
    compiled metrics are not built yet (it saw no batch) has a prefix of the list."""
    import keras
    return {str(i): np.asarray(keras.ops.convert_to_numpy(v.value),
                               dtype=np.float64).reshape(-1).tolist()
            for i, v in enumerate(model.metrics_variables)}


def sum_values(parts: List[dict]) -> dict:
    total: dict = {}
    for part in parts:
        for key, values in part.items():
            if key in total:
                total[key] = [a + b for a, b in zip(total[key], values)]
            else:
                total[key] = list(values)
    return total


def set_metric_values(model, values: dict) -> dict:
    """Assign summed states and read the built metrics' results (name -> float or
    list)."""
    for i, v in enumerate(model.metrics_variables):
        if str(i) in values:
            v.assign(np.asarray(values[str(i)], dtype=v.dtype).reshape(v.shape))
    out = {}
    for metric in model.metrics:
        if not getattr(metric, "built", True) or not metric.variables:
            continue  # a worker that saw no batch: rank 0's stats come from its own
        result = metric.result()
        for name, value in (result.items() if isinstance(result, dict)
                            else [(metric.name, result)]):
            arr = np.asarray(value, dtype=np.float64)
            out[name] = float(arr) if arr.ndim == 0 else arr.tolist()
    return out


def sync_non_trainable(model) -> None:
    """Average the non-trainable float weights (BatchNormalization's moving
    statistics, which each worker updates from its own data) over the workers."""
    import torch
    import torch.distributed as dist
    weights = [w for w in model.non_trainable_weights if "float" in str(w.dtype)]
    if not weights:
        return
    buf = torch.cat([w.value.detach().reshape(-1).to(torch.float64) for w in weights])
    dist.all_reduce(buf)
    buf /= dist.get_world_size()
    at = 0
    for w in weights:
        size = w.value.numel()
        w.assign(buf[at:at + size].reshape(w.value.shape).to(w.value.dtype))
        at += size


def _train_batch(model, first: bool, x, y) -> None:
    """One compiled train step; metrics accumulate over the epoch (train_on_batch
    resets them, so only the epoch's first batch goes through it: it also builds
    the model's metrics and the train function)."""
    if first:
        model.train_on_batch(x, y)
    else:
        model.train_function([(x, y, None)])


def _evaluate_batches(model, batches) -> int:
    """Accumulate the compiled loss and metrics over ``batches``; rows seen."""
    n = 0
    for i, (x, y) in enumerate(batches):
        if i == 0:
            model.test_on_batch(x, y)
        else:
            model.test_function([(x, y, None)])
        n += rows_of(x)
    return n


# -- the training worker ------------------------------------------------------------
class GradientSync:
    """``optimizer.apply`` with the gradients first averaged over the workers by one
    all-reduce (``summer``, learn.allreduce), weighted by the rows each worker had in
    the step (``weight``); a worker without data takes part with weight 0.
    ``active``: whether any worker had data in the last step (when none had,
    nothing is applied)."""

    def __init__(self, optimizer, summer):
        self._apply = optimizer.apply
        self._summer = summer
        optimizer.apply = self  # what the model's train step calls
        self.weight = 0
        self.active = True

    def __call__(self, grads, trainable_variables=None):
        import torch
        variables = list(trainable_variables)
        weight = float(self.weight)
        self.weight = 0
        parts = [(g if g is not None else torch.zeros_like(v.value)).reshape(-1)
                 .to(torch.float32) * weight for g, v in zip(grads, variables)]
        buf = self._summer.sum_(torch.cat(parts + [torch.tensor([weight])]))
        total = float(buf[-1])
        self.active = total > 0
        if not self.active:
            return None
        averaged, at = [], 0
        for v in variables:
            size = v.value.numel()
            averaged.append((buf[at:at + size] / total).reshape(v.value.shape)
                            .to(v.value.dtype))
            at += size
        return self._apply(averaged, variables)

    def idle(self, variables) -> bool:
        """A step without data; whether any other worker still had some."""
        self.weight = 0
        self([None] * len(variables), variables)
        return self.active


# Callbacks that write files or print run on rank 0 only (subclasses too): the
# workers' weights and logs are identical, and several writers of one path corrupt it.
WRITERS = ("ModelCheckpoint", "TensorBoard", "CSVLogger", "RemoteMonitor", "ProgbarLogger")
STATS_ONLY = ("epoch", "num_samples", "steps", "seconds", "samples_per_sec")
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")


def _overrides(cb, name: str) -> bool:
    """Whether ``cb`` has its own ``name`` hook (a method of its class, or a function
    set on the instance, as LambdaCallback does)."""
    import keras
    own = getattr(cb, name, None)
    return getattr(own, "__func__", own) is not getattr(keras.callbacks.Callback, name)


class Callbacks:
    """Keras callbacks on every worker, as ``Model.fit`` runs them: the epoch hooks
    get the global logs, rank 0's copy on every worker (exact, and the same
    everywhere, so callbacks decide alike); a worker's own step hooks get its local
    metrics. ``stop_training`` set on any worker (EarlyStopping, TerminateOnNaN)
    stops all of them after that epoch."""

    def __init__(self, callbacks, model, rank: int, epochs: int, steps: Optional[int]):
        import keras
        writers = tuple(getattr(keras.callbacks, n) for n in WRITERS
                        if hasattr(keras.callbacks, n))
        mine = [cb for cb in callbacks if rank == 0 or not isinstance(cb, writers)]
        self.list = keras.callbacks.CallbackList(mine, model=model, epochs=epochs,
                                                 steps=steps, verbose=0)
        self.batch_hooks = any(_overrides(cb, name) for cb in mine for name in BATCH_HOOKS)
        self.model = model
        model.stop_training = False

    def batch_begin(self, step: int) -> None:
        if self.batch_hooks:
            self.list.on_train_batch_begin(step)

    def batch_end(self, step: int) -> None:
        if self.batch_hooks:
            self.list.on_train_batch_end(step, dict(self.model.get_metrics_result()))

    def epoch_end(self, epoch: int, stats: dict) -> bool:
        """The epoch's hooks; whether training stops here (on every worker)."""
        # a worker that saw no rows lacks unbuilt metrics' values: rank 0's logs for all
        shared = gather_json(logs(stats))[0]
        self.list.on_epoch_end(epoch - 1, shared)
        return any(gather_json(bool(self.model.stop_training)))


def logs(stats: dict) -> dict:
    """An epoch's stats as Keras' logs: the loss, the metrics and their val_*."""
    return {k: v for k, v in stats.items() if k not in STATS_ONLY}


def _creator_batches(creator, config: dict, batch_size: int, local_bs: int, rank: int,
                     world: int, steps: Optional[int] = None) -> Callable[[], Iterator[tuple]]:
    """This worker's share of what a data creator returns, as (x, y) batches of
    ``local_bs``: a tf.data.Dataset (Orca's: batched with the global batch size,
    ``steps`` batches at most: it may repeat forever), or a tuple (x, y) of
    arrays."""
    import itertools
    try:  # an unseeded shuffle must give every worker the same order to shard
        import tensorflow as tf
        tf.random.set_seed(0)
    except ImportError:
        pass
    data = creator(config, batch_size)
    if hasattr(data, "unbatch") and hasattr(data, "shard"):
        mine = data.unbatch().shard(world, rank).batch(local_bs)

        def epoch():
            items = mine.as_numpy_iterator()
            for item in items if steps is None else itertools.islice(items, steps):
                if len(item) > 2:
                    raise ValueError("a data creator's dataset yields (x, y); sample "
                                     "weights are not supported")
                yield item[0], item[1]
        return epoch
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(a) for a in data)
        x, y = x[rank::world], y[rank::world]

        def arrays():
            for start in range(0, len(y), local_bs):
                yield x[start:start + local_bs], y[start:start + local_bs]
        return arrays
    raise TypeError("a Keras data creator returns a tf.data.Dataset of (x, y) batches "
                    f"or a tuple (x, y) of arrays; got {type(data).__name__}")


def _feed_epoch(feed, local_bs: int, cols: Columns) -> Iterator[tuple]:
    for xs, ys in feed_batches(feed, local_bs, cols):
        yield model_inputs(xs), model_inputs(ys)


def _evaluated(model, batches: Callable[[], Iterator[tuple]], rank: int) -> dict:
    """The compiled loss and metrics over every worker's batches, exactly."""
    model.reset_metrics()
    n = _evaluate_batches(model, batches())
    parts = gather_json({"n": n, "metrics": metric_values(model)})
    return set_metric_values(model, sum_values([p["metrics"] for p in parts]))


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def train_main(blob: bytes, ctx) -> Optional[dict]:
    """One worker of ``Estimator.fit``: ``map_fun(args, ctx)`` of a TFCluster node.
    ``blob``: the cloudpickled KerasJob, read only once Keras' backend is set."""
    os.environ["KERAS_BACKEND"] = "torch"  # unpickling the creators may import Keras
    import pickle

    job: KerasJob = pickle.loads(blob)
    import keras
    if keras.backend.backend() != "torch":
        raise RuntimeError(f"Keras was imported with the {keras.backend.backend()} backend "
                           "before the worker could choose torch (KERAS_BACKEND)")
    import torch
    import torch.distributed as dist
    torch.set_num_threads(max(1, job.threads))
    with worker_group(job.secret) as summer:
        return _train(job, ctx, dist.get_rank(), dist.get_world_size(), summer)


def _train(job: KerasJob, ctx, rank: int, world: int, summer) -> Optional[dict]:
    local_bs = max(1, job.batch_size // world)
    model = job.source.build(state_from_bytes(job.state))
    if not getattr(model, "compiled", False):
        raise ValueError("the model is not compiled: compile it in model_creator or pass "
                         "compile_args_creator=(config) -> {optimizer, loss, metrics}")
    sync = GradientSync(model.optimizer, summer)
    val: Optional[Callable[[], Iterator[tuple]]] = None
    if job.has_val and job.cols is not None:
        stored = list(_feed_epoch(ctx.get_data_feed(qname_in="val"), local_bs, job.cols))
        val = lambda: iter(stored)  # noqa: E731
    if job.val_creator is not None:
        val = _creator_batches(job.val_creator, job.source.config, job.batch_size,
                               local_bs, rank, world, job.validation_steps)
    if job.evaluate_only:
        assert val is not None
        return {"results": _evaluated(model, val, rank)}
    train: Callable[[], Iterator[tuple]]
    if job.data_creator is not None:
        train = _creator_batches(job.data_creator, job.source.config, job.batch_size,
                                 local_bs, rank, world, job.steps_per_epoch)
    else:
        assert job.cols is not None
        feed, cols = ctx.get_data_feed(), job.cols
        train = lambda: _feed_epoch(feed, local_bs, cols)  # noqa: E731
    history: list = []
    last = job.first_epoch + job.epochs - 1
    calls = Callbacks(job.callbacks, model, rank, last, job.steps_per_epoch) \
        if job.callbacks else None
    if calls is not None:
        calls.list.on_train_begin()
    epoch = job.first_epoch - 1
    for epoch in range(job.first_epoch, last + 1):
        start = time.monotonic()
        model.reset_metrics()
        if calls is not None:
            calls.list.on_epoch_begin(epoch - 1)
        batches = train()
        steps = n = 0
        while True:
            capped = job.steps_per_epoch is not None and steps >= job.steps_per_epoch
            batch = None if capped else next(batches, None)
            if batch is None:
                if not sync.idle(model.trainable_variables):
                    break
            else:
                x, y = batch
                rows = rows_of(x)
                sync.weight = rows
                if calls is not None:
                    calls.batch_begin(steps)
                _train_batch(model, n == 0, x, y)
                if calls is not None:
                    calls.batch_end(steps)
                n += rows
            steps += 1
        if job.data_creator is None:
            for _ in batches:  # the rest of a capped epoch: the feed's epoch must be taken
                pass
        sync_non_trainable(model)
        parts = gather_json({"n": n, "metrics": metric_values(model)})
        total = sum(p["n"] for p in parts)
        stats: dict = {"epoch": epoch, **set_metric_values(
            model, sum_values([p["metrics"] for p in parts])), "num_samples": total,
            "steps": steps}
        if val is not None and (epoch % job.validation_freq == 0 or epoch == last):
            stats.update({f"val_{k}": v for k, v in _evaluated(model, val, rank).items()})
        seconds = time.monotonic() - start
        stats["seconds"] = seconds
        stats["samples_per_sec"] = total / seconds if seconds else 0.0
        history.append(stats)
        stop = calls is not None and calls.epoch_end(epoch, stats)
        if rank == 0:
            if job.model_dir:
                epoch_checkpoints(job.model_dir, epoch,
                                  state_to_bytes(model_state(model, epoch)))
            ctx.report({"stats": stats, "last": epoch == last or stop})
        if stop:
            if job.data_creator is None:
                for _ in range(last - epoch):  # the feed's remaining epochs must be taken
                    for _ in train():
                        pass
            break
    if calls is not None:
        calls.list.on_train_end(logs(history[-1]) if history else None)
    digests = gather_json(weights_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"the workers' weights differ after fit: {digests}")
    if rank != 0:
        return None
    blob = state_to_bytes(model_state(model, epoch))
    return {"state": base64.b64encode(blob).decode(), "history": history,
            "digests": digests}


# -- evaluate and predict: one Spark task per partition ---------------------------------
def evaluate_partition(source: ModelSource, blob, cols: Columns, batch_size: int,
                       batches: Iterator) -> Iterator:
    """One partition's metric states (sums over partitions are exact), one JSON row."""
    import pyarrow as pa
    model = source.build(state_from_bytes(blob.value))
    model.reset_metrics()
    pairs = ((model_inputs(batch_arrays(b, cols.features)),
              model_inputs(batch_arrays(b, cols.labels, labels=True)))
             for b in chunks(batches, batch_size))
    n = _evaluate_batches(model, pairs)
    yield pa.RecordBatch.from_pydict(
        {"stats": [json.dumps({"n": n, "metrics": metric_values(model)})]})


def predict_arrays(model, xs: List[np.ndarray]) -> np.ndarray:
    """The model's first output for ``xs``."""
    out: Any = model.predict_on_batch(model_inputs(xs))
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        out = out[0]
    return np.asarray(out)


def predictor(source: ModelSource, blob):
    """In a task: the model with the broadcast weights, as ``predict(xs)``."""
    import functools
    model = source.build(state_from_bytes(blob.value))
    return functools.partial(predict_arrays, model)

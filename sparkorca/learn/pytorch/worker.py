"""The PyTorch Estimator on the executors: the training worker (a TFCluster node's
map_fun, one per worker, under torch DDP over learn.process_group), and the evaluate / predict
functions Spark runs on each partition.

Workers exchange their statistics as JSON over torch.distributed tensors (never
pickle), and the driver gets rank 0's result as JSON over the node's
authenticated control connection: model state as ``torch.save`` bytes read back
with ``weights_only=True``.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

from .. import metrics as metricmod
from ..allreduce import ddp_hook
from ..checkpoints import epoch_checkpoints
from ..data import Columns, batch_arrays, is_creator
from ..partitions import WorkerJob, chunks, feed_batches
from ..process_group import gather_json, worker_group
from .callbacks import MainCallback, may_stop_early
from .runner import Runner


@dataclasses.dataclass
class Creators:
    """What builds the model, its optimizer, loss and scheduler (Orca's creators)."""

    model: Callable
    optimizer: Optional[Callable]
    loss: Any
    scheduler: Optional[Callable]
    config: dict

    def build(self, state: Optional[dict], train: bool):
        import torch
        model = self.model(self.config)
        if state is not None:
            model.load_state_dict(state["models"][0])
        optimizer = scheduler = None
        if train:
            assert self.optimizer is not None  # checked by the Estimator
            optimizer = self.optimizer(model, self.config)
            if self.scheduler is not None:
                scheduler = self.scheduler(optimizer, self.config)
            if state is not None and state.get("optimizers"):
                optimizer.load_state_dict(state["optimizers"][0])
            if scheduler is not None and state is not None and state.get("schedulers"):
                scheduler.load_state_dict(state["schedulers"][0])
        loss = self.loss
        if loss is not None and not isinstance(loss, torch.nn.Module) and is_creator(loss):
            loss = loss(self.config)
        return model, optimizer, loss, scheduler


@dataclasses.dataclass(kw_only=True)
class TrainJob(WorkerJob):
    """callbacks: Orca's, the MainCallback first (callbacks.checked)."""

    creators: Creators
    metrics: List[metricmod.Metric]
    state: Optional[bytes]


def state_to_bytes(state: dict) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict:
    import torch
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def make_state(epoch: int, model, optimizer=None, scheduler=None) -> dict:
    """Orca's saved state: ``{"epoch", "models", "optimizers", "schedulers"}``."""
    state: dict = {"epoch": epoch, "models": [model.state_dict()]}
    if optimizer is not None:
        state["optimizers"] = [optimizer.state_dict()]
    if scheduler is not None:
        state["schedulers"] = [scheduler.state_dict()]
    return state


# -- a model on batches ---------------------------------------------------------------
def _tensor(x: np.ndarray):
    """A tensor of ``x``; read-only arrays (zero-copy from Arrow or Ray's object
    store) are copied, as torch does not take them."""
    import torch
    return torch.from_numpy(x if x.flags.writeable else np.array(x))


def _outputs(out) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _criterion(loss, out, ys):
    return loss(*_outputs(out), *ys)


class Evaluation:
    """Loss and metrics over batches; its state merges exactly with others'."""

    def __init__(self, metrics: Sequence[metricmod.Metric]):
        self.metrics = metricmod.fresh(metrics)
        self.loss_sum = 0.0
        self.n = 0

    def add(self, model, loss, xs, ys) -> None:
        import torch
        with torch.no_grad():
            out = model(*[_tensor(x) for x in xs])
            value = _criterion(loss, out, [_tensor(y) for y in ys]) \
                if loss is not None else None
            self.add_output(out, value, ys)

    def add_output(self, out, loss_value, ys) -> None:
        """A batch the model has seen: its outputs, loss (None: no loss) and targets."""
        n = len(ys[0])
        if loss_value is not None:
            self.loss_sum += float(loss_value) * n
        first = _outputs(out)[0].detach().numpy()
        for m in self.metrics:
            m.update(first, ys[0])
        self.n += n

    def to_json(self) -> dict:
        return {"loss_sum": self.loss_sum, "n": self.n,
                "metrics": metricmod.states_to_json(self.metrics)}

    @staticmethod
    def result(metrics: Sequence[metricmod.Metric], parts: Sequence[dict], has_loss: bool,
               prefix: str = "", lower: bool = False) -> dict:
        """The exact values from every worker's or partition's ``to_json``."""
        total = metricmod.fresh(metrics)
        metricmod.merge_json(total, [p["metrics"] for p in parts])
        n = sum(p["n"] for p in parts)
        out = {}
        for m in total:
            name = m.get_name()
            out[prefix + (name.lower() if lower else name)] = m.compute()
        if has_loss:
            out[f"{prefix or 'val_'}loss"] = sum(p["loss_sum"] for p in parts) / n if n \
                else float("nan")
        out[f"{prefix}num_samples"] = n
        return out


# -- the training worker ------------------------------------------------------------
def _loader_batches(loader) -> Iterator[tuple]:
    """A DataLoader's batches, Orca's way: ``*features, target = batch``."""
    for batch in loader:
        if isinstance(batch, dict):
            raise TypeError("a data creator's batches are (features..., label) tuples; "
                            "got a dict")
        *xs, y = batch
        yield [np.asarray(x) for x in xs], [np.asarray(y)]


def _sharded_loader(loader, rank: int, world: int, shuffle: bool):
    """The creator's DataLoader over this worker's share of its dataset."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, Subset
    if isinstance(loader.dataset, IterableDataset):
        # no index to share out: every worker trains on its own stream (the creator
        # shards it if it wants to); evaluation reads it once, on rank 0
        return loader if shuffle or rank == 0 else []
    if shuffle:
        sampler: torch.utils.data.DistributedSampler = torch.utils.data.DistributedSampler(
            loader.dataset, num_replicas=world, rank=rank, shuffle=True)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          collate_fn=loader.collate_fn, num_workers=loader.num_workers)
    # evaluation: each sample exactly once (DistributedSampler would pad)
    part = Subset(loader.dataset, list(range(rank, len(loader.dataset), world)))
    return DataLoader(part, batch_size=loader.batch_size, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers)


def train_main(job: TrainJob, ctx) -> Optional[dict]:
    """One worker of ``Estimator.fit``: ``map_fun(args, ctx)`` of a TFCluster node."""
    import torch
    torch.set_num_threads(max(1, job.threads))
    with worker_group(job.secret) as summer:
        return _train(job, ctx, summer)


def _train(job: TrainJob, ctx, summer) -> Optional[dict]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    rank, world = dist.get_rank(), dist.get_world_size()
    local_bs = max(1, job.batch_size // world)
    state = state_from_bytes(job.state) if job.state is not None else None
    if job.evaluate_only:
        return _evaluated_on_workers(job, state, rank, world, local_bs)
    model, optimizer, loss, scheduler = job.creators.build(state, train=True)
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(summer, ddp_hook)  # one call per bucket: see allreduce.py
    val_batches: Optional[list] = None
    if job.has_val and job.cols is not None:
        val_feed = ctx.get_data_feed(qname_in="val")
        val_batches = list(feed_batches(val_feed, local_bs, job.cols))
    train_loader = val_loader = None
    if job.data_creator is not None:
        train_loader = _sharded_loader(job.data_creator(job.creators.config, local_bs),
                                       rank, world, shuffle=True)
        if job.val_creator is not None:
            val_loader = _sharded_loader(job.val_creator(job.creators.config, local_bs),
                                         rank, world, shuffle=False)
    feed = ctx.get_data_feed() if job.cols is not None else None
    # the workers' batch counts of an epoch, where every epoch has the same (the
    # feed replays the same rows): when they are equal, DDP needs no join (its
    # extra collective every step cost 20% of the bench's step)
    counts: Optional[list] = None
    if feed is not None and getattr(feed, "rows", None) is not None:  # the ray backend
        counts = [-(-r // local_bs) for r in gather_json(feed.rows)]

    def epoch_batches() -> Iterator[tuple]:
        if feed is not None and job.cols is not None:
            return feed_batches(feed, local_bs, job.cols)
        return _loader_batches(train_loader)

    callbacks = list(job.callbacks) or [MainCallback()]
    early_stop = may_stop_early(callbacks)
    main = callbacks[0]
    last_epoch = job.first_epoch + job.epochs - 1
    runner = Runner(
        model=model, ddp=ddp, optimizer=optimizer, scheduler=scheduler, criterion=loss,
        config=job.creators.config, callbacks=callbacks, first_epoch=job.first_epoch,
        num_epochs=last_epoch, rank=rank, size=world,
        num_features=len(job.cols.features) if job.cols is not None else -1,
        state_of=lambda weights_only: state_to_bytes(
            {"epoch": runner.epochs, "models": [model.state_dict()]} if weights_only
            else make_state(runner.epochs, model, optimizer, scheduler)))
    history = []
    runner.call("before_run")
    for epoch in range(job.first_epoch, last_epoch + 1):
        start = time.monotonic()
        runner.mode = "train"
        runner.epoch_stats = None
        model.train()
        if train_loader is not None and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        runner.call("before_train_epoch")
        batches = epoch_batches()
        loss_sum, n, count, last = 0.0, 0, 0, float("nan")
        even = counts is not None and len(set(counts)) == 1 and not early_stop
        # workers' batch counts may differ (the feed is not padded), a callback may
        # end one worker's epoch early: then the others' steps need DDP's join
        with contextlib.nullcontext() if even else ddp.join():
            for index, (xs, ys) in enumerate(batches):
                _set_batch(runner, index, xs, ys)
                runner.call("before_train_iter")
                main.on_train_forward(runner)
                main.on_iter_backward(runner)
                last = float(runner.loss.detach())
                loss_sum += last * len(ys[0])
                n += len(ys[0])
                count += 1
                runner.metrics_stats = {"train_loss": last, "num_samples": len(ys[0])}
                runner.global_step += 1
                runner.call("after_train_iter")
                if runner.stop:
                    break
        if feed is not None:
            for _ in batches:  # a stopped epoch's rest: the feed's epoch must be taken
                pass
        main.on_lr_adjust(runner)
        parts = gather_json({"loss_sum": loss_sum, "n": n, "count": count, "last": last})
        total = sum(p["n"] for p in parts)
        if feed is not None:
            counts = [p["count"] for p in parts]
        stats = {"epoch": epoch, "num_samples": total,
                 "batch_count": float(np.mean([p["count"] for p in parts])),
                 "train_loss": sum(p["loss_sum"] for p in parts) / total if total
                 else float("nan"),
                 "last_train_loss": float(np.nanmean([p["last"] for p in parts]))
                 if any(p["count"] for p in parts) else float("nan")}
        if val_batches is not None or val_loader is not None:
            stats.update(_validated(runner, main, job, val_batches, val_loader))
        seconds = time.monotonic() - start
        stats["seconds"] = seconds
        stats["samples_per_sec"] = total / seconds if seconds else 0.0
        history.append(stats)
        runner.epochs = epoch
        runner.epoch_stats = stats
        runner.call("after_train_epoch")
        stop = any(gather_json(bool(runner.stop)))  # every worker ends after this epoch
        if rank == 0:
            if job.model_dir:
                epoch_checkpoints(job.model_dir, epoch, state_to_bytes(
                    make_state(epoch, model, optimizer, scheduler)))
            ctx.report({"stats": stats, "last": epoch == last_epoch or stop})
        if stop:
            if feed is not None:
                for _ in range(last_epoch - epoch):  # the feed's remaining epochs
                    for _ in epoch_batches():
                        pass
            break
    runner.call("after_run")
    if rank != 0:
        return None
    blob = state_to_bytes(make_state(runner.epochs, model, optimizer, scheduler))
    return {"state": base64.b64encode(blob).decode(), "history": history}


def _set_batch(runner, index: int, xs: list, ys: list) -> None:
    runner.batch = tuple(_tensor(a) for a in list(xs) + list(ys))
    runner.batch_idx = index
    runner._num_features = len(xs)


def _validated(runner, main, job: TrainJob, val_batches, val_loader) -> dict:
    """The validation pass of an epoch, through the MainCallback's forward and the
    val hooks; the figures exact over every worker's data."""
    import torch
    runner.mode = "val"
    runner.models[0].eval()
    runner.call("before_val_epoch")
    ev = Evaluation(job.metrics)
    with torch.no_grad():
        for index, (xs, ys) in enumerate(val_batches if val_batches is not None
                                         else _loader_batches(val_loader)):
            _set_batch(runner, index, xs, ys)
            runner.call("before_val_iter")
            main.on_val_forward(runner)
            ev.add_output(runner.output, runner.loss, ys)
            runner.call("after_val_iter")
    runner.call("after_val_epoch")
    return Evaluation.result(job.metrics, gather_json(ev.to_json()),
                             runner.criterion is not None, prefix="val_", lower=True)


def _evaluated_on_workers(job: TrainJob, state: Optional[dict], rank: int, world: int,
                          local_bs: int) -> Optional[dict]:
    """evaluate(data creator): each worker its share of the creator's data, the
    figures exact over all of it."""
    assert job.val_creator is not None
    model, _, loss, _ = job.creators.build(state, train=False)
    model.eval()
    ev = Evaluation(job.metrics)
    loader = _sharded_loader(job.val_creator(job.creators.config, local_bs), rank, world,
                             shuffle=False)
    for xs, ys in _loader_batches(loader):
        ev.add(model, loss, xs, ys)
    result = Evaluation.result(job.metrics, gather_json(ev.to_json()), loss is not None)
    return {"results": result} if rank == 0 else None


# -- evaluate and predict: one Spark task per partition ---------------------------------
def evaluate_partition(creators: Creators, blob, metrics, cols: Columns, batch_size: int,
                       batches: Iterator) -> Iterator:
    """One partition's loss and metric statistics, as one JSON row."""
    import pyarrow as pa
    import torch
    torch.set_num_threads(1)
    model, _, loss, _ = creators.build(state_from_bytes(blob.value), train=False)
    model.eval()
    ev = Evaluation(metrics)
    for batch in chunks(batches, batch_size):
        ev.add(model, loss, batch_arrays(batch, cols.features),
               batch_arrays(batch, cols.labels, labels=True))
    yield pa.RecordBatch.from_pydict({"stats": [json.dumps(ev.to_json())]})


def predict_arrays(model, xs: List[np.ndarray]) -> np.ndarray:
    """The model's first output for ``xs``."""
    import torch
    with torch.no_grad():
        return _outputs(model(*[_tensor(x) for x in xs]))[0].detach().numpy()


def predictor(creators: Creators, blob):
    """In a task: the model with the broadcast state, as ``predict(xs)``."""
    import functools

    import torch
    torch.set_num_threads(1)
    model, _, _, _ = creators.build(state_from_bytes(blob.value), train=False)
    model.eval()
    return functools.partial(predict_arrays, model)

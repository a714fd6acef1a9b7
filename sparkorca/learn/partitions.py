"""What the Estimators' code on the executors shares: an epoch's batches off the
TFCluster feed, and predict over a partition (a DataFrame's Arrow batches or a
Shards partition) with whatever model a framework builds.

``predictor`` arguments are functions of no arguments, called once in the task,
that build the model and return ``predict(xs) -> ndarray`` (its first output).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterator, List, Optional

import numpy as np

from .data import Columns, batch_arrays, shard_batches

Predictor = Callable[[], Callable[[List[np.ndarray]], np.ndarray]]


@dataclasses.dataclass(kw_only=True)
class WorkerJob:
    """What every Estimator's training worker is told, whatever the framework (each
    adds its model's parts): the epochs, the data and where checkpoints go."""

    first_epoch: int  # the number (1-based) the first trained epoch gets
    epochs: int
    batch_size: int  # the global batch
    cols: Optional[Columns]  # None: data creators
    data_creator: Optional[Callable]
    val_creator: Optional[Callable]
    has_val: bool  # validation data that the feed brings (not a creator)
    model_dir: Optional[str]
    threads: int
    evaluate_only: bool = False  # evaluate(data creator): val_creator's data, no training
    callbacks: tuple = ()  # the framework's callbacks, run on the workers
    # proves a worker to the others (learn.rendezvous's store, learn.allreduce's
    # exchange); a fresh one per job, carried with it (as the node layer's cluster secret)
    secret: bytes = dataclasses.field(default_factory=lambda: os.urandom(32), repr=False)


class _Forwarded:
    """A text stream that writes through to ``stream`` and hands each complete line
    to ``send`` (anything else, e.g. ``fileno``, is the stream's)."""

    def __init__(self, stream, send: Callable[[str], None]) -> None:
        self.stream = stream
        self.send = send
        self.pending = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.pending += text
        if "\n" in self.pending:
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self.send(line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close_line(self) -> None:
        if self.pending:
            self.send(self.pending)
            self.pending = ""

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def with_output_forwarded(main: Callable, job, ctx):
    """``main(job, ctx)`` with the worker's Python output (print, logging to the
    standard streams) also sent to the driver, line by line, over the node's control
    connection (``log_to_driver``); the executor's log keeps it too."""
    import sys
    worker = ctx.worker_num

    def send(line: str) -> None:
        try:
            ctx.report({"log": line, "worker": worker})
        except OSError:  # the driver has gone: the executor's log has the line
            pass
    out, err = sys.stdout, sys.stderr
    streams = [_Forwarded(out, send), _Forwarded(err, send)]
    sys.stdout, sys.stderr = streams
    try:
        return main(job, ctx)
    finally:
        sys.stdout, sys.stderr = out, err
        for stream in streams:
            stream.close_line()


def feed_batches(feed, size: int, cols: Columns) -> Iterator[tuple]:
    """An epoch's batches off the TFCluster feed: a batch holds ``size`` rows
    until the epoch's end, where the feed hands out a partial or an empty one."""
    while True:
        batch = feed.next_batch_arrow(size)
        if batch is None or batch.num_rows == 0:
            return
        yield (batch_arrays(batch, cols.features),
               batch_arrays(batch, cols.labels, labels=True))
        if batch.num_rows < size:
            return


def chunks(batches: Iterator, size: int) -> Iterator:
    for batch in batches:
        for start in range(0, batch.num_rows, size):
            yield batch.slice(start, size)


def squeezed(pred: np.ndarray) -> np.ndarray:
    """Trailing size-1 dims dropped (Orca's rule): one value per row is a scalar."""
    while pred.ndim > 1 and pred.shape[-1] == 1:
        pred = pred[..., 0]
    return pred


def prediction_array(pred: np.ndarray):
    """Predictions as an Arrow column: scalars as double, vectors as lists of float."""
    import pyarrow as pa
    if pred.ndim == 1:
        return pa.array(pred.astype(np.float64))
    flat = pa.array(np.ascontiguousarray(pred, dtype=np.float32).reshape(-1))
    for width in reversed(pred.shape[1:]):
        flat = pa.ListArray.from_arrays(
            pa.array(np.arange(0, len(flat) + 1, width, dtype=np.int32)), flat)
    return flat


def predict_partition(predictor: Predictor, cols: Columns, batch_size: int, output: str,
                      batches: Iterator) -> Iterator:
    """A partition's rows with the prediction column added, in order."""
    import pyarrow as pa
    predict = predictor()
    for batch in chunks(batches, batch_size):
        pred = squeezed(predict(batch_arrays(batch, cols.features)))
        yield pa.RecordBatch.from_arrays(batch.columns + [prediction_array(pred)],
                                         names=batch.schema.names + [output])


def predict_shards(predictor: Predictor, cols: Columns, batch_size: int,
                   shards: Iterator) -> Iterator:
    """Shards with a "prediction" entry (a column of a pandas shard)."""
    import pandas as pd
    predict = predictor()
    for shard in shards:
        preds = [squeezed(predict(batch_arrays(b, cols.features)))
                 for b in chunks(shard_batches(Columns(cols.features), iter([shard])),
                                 batch_size)]
        pred = np.concatenate(preds) if preds else np.zeros(0)
        if isinstance(shard, pd.DataFrame):
            shard = shard.copy()
            shard["prediction"] = list(pred) if pred.ndim > 1 else pred
        else:
            shard = {**shard, "prediction": pred}
        yield shard

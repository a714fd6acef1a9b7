"""What the Estimators share on the driver: the running context, how many
workers and whether their slots exist, fit's data and epoch arguments, running
the workers (as TFCluster nodes fed from the store on the "spark" backend, as Ray
actors fed from Ray Datasets on the "ray" one: ``learn.ray_workers``), and the
plain jobs of evaluate and predict (Spark tasks; Ray tasks for a Ray Dataset).

The framework's own parts (its worker's ``map_fun``, how a model is built and its
state kept) stay in ``learn.pytorch`` and ``learn.tf2``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from typing import Any, Callable, List, Optional

from .. import _validate as check
from .. import context
from ..errors import InvalidArgumentError, NoContextError, OrcaRuntimeError
from ..spark.session import is_local_master
from .data import (
    ArrowInput,
    Columns,
    check_batch_size,
    check_epochs,
    collected_batches,
    columns_for,
    feedable,
    is_creator,
    is_ray_dataset,
)

FIT_TIMEOUT = 7 * 24 * 3600.0
BACKENDS = ("spark", "ray")


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise InvalidArgumentError("backend", backend, "'spark' or 'ray'",
                                   hint="'spark' trains in Spark tasks and needs no Ray; "
                                   "'ray' trains in Ray actors on the context's Ray")
    return backend


@dataclasses.dataclass(frozen=True)
class SparkPlan:
    """fit's workers on the Spark backend: one per task slot they take."""

    num_workers: int
    threads: int


class Shipped:
    """A value sent inside a task's function where there is no Spark broadcast
    (Ray tasks, a Spark Connect client); read as a broadcast is, through ``value``."""

    def __init__(self, value) -> None:
        self.value = value

    def unpersist(self) -> None:
        pass


def check_config(config) -> dict:
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise InvalidArgumentError("config", config, "a dict passed to every creator")
    if "batch_size" in config:
        raise InvalidArgumentError("config", "a 'batch_size' entry",
                                   "a config without batch_size: pass fit(batch_size=...)")
    return dict(config)


def check_model_dir(model_dir) -> Optional[str]:
    if model_dir is not None and not isinstance(model_dir, str):
        raise InvalidArgumentError("model_dir", model_dir, "None or a directory path or URL")
    return model_dir


@dataclasses.dataclass
class FitInputs:
    """fit's arguments, checked: the epochs to train and where the data comes from."""

    first_epoch: int  # the number (1-based) the first trained epoch gets
    epochs: int  # how many to train
    batch_size: int  # the global batch
    cols: Optional[Columns]  # None: data creators
    data_creator: Optional[Callable]
    val_creator: Optional[Callable]
    has_val: bool  # validation data that the feed brings (not a creator)

    def job_fields(self, model_dir: Optional[str], threads: int) -> dict:
        """The fields of a worker job (``partitions.WorkerJob``) these inputs give."""
        return {"first_epoch": self.first_epoch, "epochs": self.epochs,
                "batch_size": self.batch_size, "cols": self.cols,
                "data_creator": self.data_creator, "val_creator": self.val_creator,
                "has_val": self.has_val, "model_dir": model_dir, "threads": threads}


def fit_inputs(data, epochs, batch_size, feature_cols, label_cols, validation_data,
               initial_epoch, trained_epochs: int) -> FitInputs:
    """``initial_epoch=k`` (Keras' meaning) trains epochs k+1 .. ``epochs``; without
    it ``epochs`` more epochs follow the ``trained_epochs`` already done."""
    epochs = check_epochs(epochs)
    batch_size = check_batch_size(batch_size)
    initial_epoch = check.integer("initial_epoch", initial_epoch, minimum=0)
    if initial_epoch:
        if initial_epoch >= epochs:
            raise InvalidArgumentError("initial_epoch", initial_epoch,
                                       f"an epoch below epochs={epochs}")
        first, count = initial_epoch + 1, epochs - initial_epoch
    else:
        first, count = trained_epochs + 1, epochs
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
    return FitInputs(first, count, batch_size, cols,
                     data if creator else None, validation_data if creator else None,
                     validation_data is not None and not creator)


def output_column(output_cols) -> str:
    """predict's output column: "prediction" unless ``output_cols`` names one."""
    if output_cols is None:
        return "prediction"
    names = [output_cols] if isinstance(output_cols, str) else list(output_cols)
    if len(names) != 1 or not isinstance(names[0], str):
        raise InvalidArgumentError("output_cols", output_cols, "one column name")
    return names[0]


class SparkEstimator:
    """The machinery under ``PyTorchSparkEstimator`` and ``KerasSparkEstimator``,
    on either backend: nothing runs between calls (every fit's workers end with
    it), so ``shutdown`` only refuses later calls."""

    def __init__(self, *, workers_per_node, model_dir, log_to_driver, backend="spark"):
        self.backend = check_backend(backend)
        self.workers_per_node = check.integer("workers_per_node", workers_per_node)
        self.model_dir = check_model_dir(model_dir)
        self.log_to_driver = check.boolean("log_to_driver", log_to_driver)
        self.epoch = 0
        self._shut = False
        context.on_stop(self.shutdown)

    def shutdown(self, force: bool = False) -> None:
        self._shut = True

    # -- where it runs ---------------------------------------------------------
    def _sc(self):
        self._check_open()
        context.refuse_over_connect(
            "this Estimator call (the spark backend's workers, or Shards)",
            "fit with backend='ray' (workers on RayOnSpark) on a DataFrame or a Ray Dataset")
        running = context.current()
        if running is None or running.sc is None:
            raise NoContextError("the Estimator's spark backend needs a running context: "
                                 "init_orca_context(...) first")
        return running.sc

    def _check_open(self) -> None:
        if self._shut:
            raise OrcaRuntimeError("this Estimator has been shut down")

    def _worker_plan(self, data, validation_data=None):
        """Where fit's workers run; checked before anything starts."""
        self._check_open()
        if self.backend == "ray":
            from . import ray_workers
            return ray_workers.plan(self.workers_per_node)
        for name, value in (("data", data), ("validation_data", validation_data)):
            if is_ray_dataset(value):
                raise InvalidArgumentError(name, "a Ray Dataset", "a Spark DataFrame, Shards "
                                           "or a data creator on the 'spark' backend",
                                           hint="from_torch/from_keras(backend='ray') trains "
                                           "on Ray Datasets")
        sc = self._sc()
        n = self._num_workers(sc)
        self._check_slots(sc, n)
        return SparkPlan(n, self._threads_per_worker(sc))

    def _shipped(self, data, value):
        """``value`` for evaluate's / predict's tasks: a Spark broadcast, or sent with
        the function to Ray's tasks and through Spark Connect (it has no broadcast)."""
        from ..node.job import over_connect
        if is_ray_dataset(data) or over_connect(data):
            self._check_open()
            return Shipped(value)
        return self._sc().broadcast(value)

    def _num_workers(self, sc) -> int:
        from ..spark.session import expected_executors, registered_executors
        if is_local_master(sc):
            nodes = 1
        else:
            nodes = expected_executors(sc) or registered_executors(sc) or 1
        return nodes * self.workers_per_node

    def _threads_per_worker(self, sc) -> int:
        if is_local_master(sc):
            cores = sc.defaultParallelism
        else:
            cores = int(sc.getConf().get("spark.executor.cores", "1"))
        return max(1, cores // self.workers_per_node)

    def _check_slots(self, sc, n: int) -> None:
        from ..cluster.driver import task_slots
        slots = task_slots(sc)
        if slots is not None and n > slots:
            raise InvalidArgumentError(
                "workers_per_node", self.workers_per_node,
                f"at most {max(1, slots // max(1, n // self.workers_per_node))}: {n} workers "
                f"need {n} task slots at once and the application has {slots}")

    # -- fit -----------------------------------------------------------------------
    def _run_workers(self, plan, main, job_args, inputs: FitInputs, data,
                     validation_data, progress: "Progress") -> dict:
        """Run ``main(job_args, ctx)`` on the plan's workers, feed them the data for
        ``inputs.epochs`` epochs; rank 0's result."""
        if self.backend == "ray":
            from . import ray_workers
            try:
                return ray_workers.run_workers(
                    plan, main, job_args, inputs.cols, data,
                    validation_data if inputs.has_val else None,
                    lambda body: progress.epoch(body.get("stats", {})))
            finally:
                progress.close()
        return self._run_nodes(plan.num_workers, main, job_args, inputs, data,
                               validation_data, progress)

    def _run_nodes(self, n: int, main, job_args, inputs: FitInputs, data,
                   validation_data, progress: "Progress") -> dict:
        """On ``n`` TFCluster nodes: store the data on them and replay it
        ``inputs.epochs`` times; rank 0's result."""
        from ..cluster import driver
        from ..cluster.roles import InputMode
        sc = self._sc()
        cols = inputs.cols
        mode = InputMode.TENSORFLOW if cols is None else InputMode.SPARK
        queues = ("input", "val") if inputs.has_val else ("input",)
        if self.log_to_driver:  # Ray forwards its workers' output itself
            from .partitions import with_output_forwarded
            main = functools.partial(with_output_forwarded, main)
        cluster = driver.run(sc, main, job_args, num_executors=n, input_mode=mode,
                             queues=queues, reservation_timeout=600)
        cluster.server.on_progress = lambda link, body: _shown(progress, body)
        try:
            if cols is not None:
                if inputs.has_val:
                    cluster.feed_stored(feedable(validation_data, cols), 1, FIT_TIMEOUT, "val")
                cluster.feed_stored(feedable(data, cols, n), inputs.epochs, FIT_TIMEOUT, "input")
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

    # -- evaluate / predict: one Spark task per partition ---------------------------
    @staticmethod
    def _check_plain_data(data, what: str) -> None:
        if is_creator(data):
            raise InvalidArgumentError("data", "a data creator", "a Spark DataFrame, "
                                       f"sparkorca.data Shards or a Ray Dataset ({what} runs "
                                       "as tasks over the data)")

    @staticmethod
    def _partition_stats(data, cols: Columns, body) -> List[dict]:
        """``body(batches)`` on every partition or Ray Dataset block (it yields one
        JSON "stats" row each)."""
        if is_ray_dataset(data):
            from .ray_workers import ByValue
            rows = data.select_columns(list(cols.features + cols.labels)).map_batches(
                functools.partial(_stats_block, ByValue(body)), batch_format="pyarrow",
                batch_size=None).take_all()
            return [json.loads(r["stats"]) for r in rows]
        fed = feedable(data, cols)
        if isinstance(fed, ArrowInput):
            rows = fed.to_arrow_rdd().mapPartitions(
                lambda it: (r for b in body(it) for r in b.column(0).to_pylist())).collect()
        else:
            rows = [r.stats for r in fed.mapInArrow(body, "stats string").collect()]
        return [json.loads(r) for r in rows]

    @staticmethod
    def _predicted(data, cols: Columns, output: str, frame_body, shards_body,
                   prediction_type: Callable[[Any], Any]):
        """``data`` with its predictions (lazy): a DataFrame gets the ``output`` column
        of ``prediction_type(first_row_batch)``, a Ray Dataset that column, Shards a
        "prediction" entry."""
        if is_ray_dataset(data):
            if output in data.columns():
                raise InvalidArgumentError("output_cols", output,
                                           f"a name not among the columns {data.columns()}")
            from .ray_workers import ByValue
            out = data.map_batches(
                functools.partial(_predicted_block, ByValue(frame_body), output),
                batch_format="pyarrow", batch_size=None)
            out.context.execution_options.preserve_order = True  # rows stay in order
            return out
        from pyspark.sql import DataFrame
        if isinstance(data, DataFrame):
            if output in data.columns:
                raise InvalidArgumentError("output_cols", output,
                                           f"a name not among the columns {data.columns}")
            from pyspark.sql.types import DoubleType, StructField, StructType
            batches = collected_batches(data.select(*cols.features).limit(1))
            kind = prediction_type(batches[0]) if batches else DoubleType()
            # a new schema: StructType.add would change the DataFrame's own
            schema = StructType(list(data.schema.fields) + [StructField(output, kind)])
            return data.mapInArrow(frame_body, schema)
        return data._child(data.rdd.mapPartitions(shards_body))


def _shown(progress: "Progress", body: dict) -> None:
    """A worker's message on the driver: a line of its output, or an epoch's stats."""
    if "log" in body:
        print(f"(worker {body.get('worker')}) {body['log']}", file=sys.stdout, flush=True)
    else:
        progress.epoch(body.get("stats", {}))


def _stats_block(body, table):
    """A Ray Dataset block's "stats" row (``body`` over its batches)."""
    import pyarrow as pa
    return pa.Table.from_batches(list(body(iter(table.to_batches()))))


def _predicted_block(frame_body, output: str, table):
    """A Ray Dataset block with its predictions (``frame_body`` over its batches)."""
    import pyarrow as pa
    batches = list(frame_body(iter(table.to_batches())))
    if not batches:
        return table.append_column(output, pa.array([], pa.float64()))
    return pa.Table.from_batches(batches)


def spark_type_of(pred) -> Any:
    """The Spark type of a prediction array's rows: double for one value per row,
    (nested) array<float> for more."""
    from pyspark.sql.types import ArrayType, DoubleType, FloatType
    out: Any = DoubleType() if pred.ndim == 1 else FloatType()
    for _ in range(pred.ndim - 1):
        out = ArrayType(out)
    return out


_NOT_SHOWN = {"epoch", "num_samples", "batch_count", "steps", "seconds", "samples_per_sec"}


class Progress:
    """One line per epoch on the driver (a tqdm bar with use_tqdm in a terminal)."""

    def __init__(self, last_epoch: int, use_tqdm: bool, quiet: bool = False):
        self.bar = None
        self.quiet = quiet
        if use_tqdm and not quiet:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=last_epoch, unit="epoch")
            except ImportError:
                pass

    def epoch(self, stats: dict) -> None:
        if self.quiet:
            return
        shown = ", ".join(f"{k}={v:.4g}" for k, v in stats.items()
                          if k not in _NOT_SHOWN and isinstance(v, float))
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

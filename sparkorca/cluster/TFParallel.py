"""``TFParallel`` as TensorFlowOnSpark programs import it: ``TFParallel.run(sc, map_fun,
tf_args, num_executors)`` runs the same single-node function on ``num_executors``
Spark tasks at once (e.g. inference, each task on its shard of the files).

There is no TF cluster, reservation or data feed: ``map_fun(tf_args, ctx)`` runs in
the executor's Python worker, and ``ctx`` says which of the copies this is.

The executor side (``_run_partition``) imports nothing of the driver side.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any, Dict, List

from ..errors import InvalidArgumentError, OrcaRuntimeError
from .node_context import absolute_path


@dataclasses.dataclass
class ParallelContext:
    """``ctx`` of a TFParallel ``map_fun``: TFoS's TFNodeContext as TFParallel fills it.

    ``executor_id`` and ``worker_num`` are this copy's number, 0..num_workers-1.
    """

    executor_id: int
    worker_num: int
    num_workers: int
    defaultFS: str
    working_dir: str
    job_name: str = ""
    task_index: int = 0
    cluster_spec: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    mgr: Any = None
    tmp_socket: Any = None

    def absolute_path(self, path: str) -> str:
        """``path`` with the cluster's filesystem scheme (TFoS's ``TFNode.hdfs_path``)."""
        return absolute_path(self.defaultFS, self.working_dir, path)

    def get_data_feed(self, *args, **kwargs):
        raise OrcaRuntimeError("TFParallel runs map_fun without a data feed (ctx.mgr is None): "
                               "read the inputs in map_fun, or use TFCluster.run with "
                               "InputMode.SPARK to feed it from Spark")

    def release_port(self) -> None:
        """Nothing to release: TFParallel reserves no port."""


def run(sc, map_fun, tf_args, num_executors, use_barrier=True) -> None:
    """Run ``map_fun(tf_args, ctx)`` on ``num_executors`` Spark tasks at once and wait
    for all of them (TensorFlowOnSpark's ``TFParallel.run``); returns None.

    With ``use_barrier`` the tasks form a barrier stage, so they start together and
    one failure stops them all; the application must have ``num_executors`` task
    slots, which is checked before anything runs. Without it the tasks queue for
    free slots as a plain job does. A failure of ``map_fun`` is raised here with its
    executor's traceback.

    Examples
    --------
    >>> def inference(args, ctx):                                        # doctest: +SKIP
    ...     files = sorted(glob.glob(args.inputs + "/part-*"))[ctx.worker_num::ctx.num_workers]
    ...     ...
    >>> TFParallel.run(sc, inference, args, num_executors=2)             # doctest: +SKIP
    """
    from pyspark import cloudpickle

    from .. import _validate as check
    from ..node.job import SparkJob
    from .driver import default_fs

    num_executors = check.integer("num_executors", num_executors)
    check.boolean("use_barrier", use_barrier)
    if not callable(map_fun):
        raise InvalidArgumentError("map_fun", map_fun, "a function map_fun(args, ctx)")
    num_gpus = _num_gpus(tf_args)
    try:
        payload = cloudpickle.dumps((map_fun, tf_args))
    except Exception as e:
        name, value = ("tf_args", tf_args) if _picklable(map_fun) else ("map_fun", map_fun)
        raise InvalidArgumentError(name, value, "a value that can be pickled to the executors "
                                   f"({type(e).__name__}: {e})") from e
    if use_barrier:
        _check_slots(sc, num_executors)
    # the driver's cwd, as TFCluster's ctx has it: TFoS's '.' made relative paths
    # useless ("file:////rel") and each executor's cwd is a different directory
    body = _PartitionBody(payload, num_executors, default_fs(sc), os.getcwd(), num_gpus,
                          use_barrier)
    nodes = sc.parallelize(range(num_executors), num_executors)
    rdd = nodes.barrier() if use_barrier else nodes
    job = SparkJob(sc, f"map_fun on {num_executors} task(s)")
    try:
        job.start(lambda: rdd.mapPartitions(body).collect()).join()
    except BaseException:  # KeyboardInterrupt: do not leave the tasks running
        job.cancel()
        raise
    if job.error is not None:
        raise OrcaRuntimeError(f"TFParallel {job.failure()}") from None


def _picklable(value) -> bool:
    from pyspark import cloudpickle
    try:
        cloudpickle.dumps(value)
        return True
    except Exception:
        return False


def _num_gpus(tf_args) -> int:
    """GPUs per copy: ``tf_args.num_gpus`` (or ``tf_args['num_gpus']``), else 1 as in TFoS."""
    if isinstance(tf_args, Mapping):
        value = tf_args.get("num_gpus", 1)
    elif isinstance(tf_args, (list, tuple)):  # argv-style args carry no num_gpus
        value = 1
    else:
        value = getattr(tf_args, "num_gpus", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError("tf_args.num_gpus", value, "an integer >= 0")
    return value


def _check_slots(sc, needed: int) -> None:
    """Spark would retry a barrier stage larger than the application for minutes
    (spark.scheduler.barrier.maxConcurrentTasksCheck.*) before failing it."""
    from ..spark.session import wait_for_executors
    from . import driver
    wait_for_executors(sc, needed, driver.EXECUTOR_WAIT,
                       f"running TFParallel on {needed} task(s)")
    driver._check_slots(sc, needed, why="a barrier stage (use_barrier=True) needs one for "
                        "each of its tasks at once",
                        hint="start the context with more executors or cores, lower "
                             "num_executors, or pass use_barrier=False to run the copies "
                             "in waves")


class _PartitionBody:
    """mapPartitions body: run one copy of map_fun (a class, so that its pickle
    names this module instead of carrying the driver's closure)."""

    def __init__(self, payload: bytes, num_executors: int, default_fs: str, working_dir: str,
                 num_gpus: int, barrier: bool):
        self.payload = payload
        self.num_executors = num_executors
        self.default_fs = default_fs
        self.working_dir = working_dir
        self.num_gpus = num_gpus
        self.barrier = barrier

    def __call__(self, rows):
        from pyspark import BarrierTaskContext, TaskContext

        from .._environ import temporary_environ
        from ..node.host import scratch_tempdir
        from ..spark.executor import gpu_env
        worker_num = next(iter(rows))
        if self.barrier:
            task = BarrierTaskContext.get()
            nodes = [t.address for t in task.getTaskInfos()]
        else:
            task, nodes = TaskContext.get(), []
        env = gpu_env(task) or {"CUDA_VISIBLE_DEVICES": _visible_gpus(
            self.num_gpus, local_rank(worker_num, nodes))}
        map_fun, tf_args = pickle.loads(self.payload)
        ctx = ParallelContext(executor_id=worker_num, worker_num=worker_num,
                              num_workers=self.num_executors, defaultFS=self.default_fs,
                              working_dir=self.working_dir)
        # Spark reuses this Python worker for other tasks: both are undone after
        with temporary_environ(env), scratch_tempdir("sparkorca-parallel-"):
            map_fun(tf_args, ctx)
        return [0]


def local_rank(worker_num: int, nodes: List[str]) -> int:
    """This task's rank among the tasks on its host ("host:port" addresses of the
    barrier stage's tasks, by partition); ``worker_num`` when they are not known."""
    if not nodes or worker_num >= len(nodes):
        return worker_num
    host = nodes[worker_num].rsplit(":", 1)[0]
    return sum(1 for a in nodes[:worker_num] if a.rsplit(":", 1)[0] == host)


def gpu_indices(num_gpus: int, rank: int, count: int) -> List[int]:
    """The ``num_gpus`` of a host's ``count`` GPUs that the task of local ``rank`` takes."""
    if num_gpus <= 0 or count <= 0:
        return []
    return [(rank * num_gpus + k) % count for k in range(min(num_gpus, count))]


def _visible_gpus(num_gpus: int, rank: int) -> str:
    """CUDA_VISIBLE_DEVICES when Spark assigned no GPUs: this task's share of the
    GPUs nvidia-smi lists, or "" (CPU), as TFoS's ``util.single_node_env``."""
    count = _gpu_count() if num_gpus > 0 else 0
    return ",".join(map(str, gpu_indices(num_gpus, rank, count)))


def _gpu_count() -> int:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "--list-gpus"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


__all__ = ["run", "ParallelContext"]

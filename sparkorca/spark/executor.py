"""Who am I? Answers for code running inside a Spark task (Ray raylets, TFCluster
nodes, feeders). Light on purpose: imported on executors.
"""

from __future__ import annotations

from typing import Optional

import psutil

from ..errors import OrcaRuntimeError


def executor_jvm() -> psutil.Process:
    """The JVM of this executor: the nearest java ancestor of this Python worker."""
    p = psutil.Process()
    while p is not None:
        if p.name() == "java":
            return p
        p = p.parent()
    raise OrcaRuntimeError("no java process among the ancestors of this Python worker; "
                       "is this running inside a Spark task?")


def executor_id(jvm: Optional[psutil.Process] = None) -> str:
    """Spark's executor id ("driver" in local mode), read from the JVM's arguments."""
    args = (jvm or executor_jvm()).cmdline()
    if "--executor-id" in args:
        return args[args.index("--executor-id") + 1]
    return "driver"


def gpu_env(task_context) -> dict:
    """CUDA_VISIBLE_DEVICES from the GPUs Spark gave this task."""
    resources = task_context.resources() if task_context is not None else {}
    gpu = resources.get("gpu")
    if gpu is None or not gpu.addresses:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(gpu.addresses)}


def task_attempt_id() -> int:
    """This Spark task attempt's id, unique in the application: ``attemptNumber()``
    starts at 0 again when Spark runs a stage again, while an attempt of the earlier
    run may still be going."""
    from pyspark import TaskContext
    context = TaskContext.get()
    return context.taskAttemptId() if context is not None else 0


def partition_id() -> int:
    """This Spark task's partition (mapInArrow does not pass it to its function)."""
    from pyspark import TaskContext
    context = TaskContext.get()
    assert context is not None
    return context.partitionId()

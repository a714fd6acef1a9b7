"""The prologue of every Spark task that launches a node: who and where am I."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, Optional

from ..spark.executor import executor_id, executor_jvm, gpu_env
from .host import node_ip

if TYPE_CHECKING:
    from pyspark import TaskContext


@dataclasses.dataclass
class TaskSlot:
    """The executor a node-launching task runs on, and what Spark gave it."""

    partition: int
    executor_id: str
    executor_pid: int    # the executor JVM: nodes stop when it exits
    host: str
    gpu_env: Dict[str, str]  # CUDA_VISIBLE_DEVICES from the task's GPU addresses
    task_context: Optional[TaskContext]
    barrier: bool

    @property
    def num_gpus(self) -> int:
        devices = self.gpu_env.get("CUDA_VISIBLE_DEVICES")
        return len(devices.split(",")) if devices else 0


def this_task(partition: int, barrier: bool) -> TaskSlot:
    from pyspark import BarrierTaskContext, TaskContext
    context = BarrierTaskContext.get() if barrier else TaskContext.get()
    jvm = executor_jvm()
    return TaskSlot(partition=partition, executor_id=executor_id(jvm), executor_pid=jvm.pid,
                    host=node_ip(), gpu_env=gpu_env(context), task_context=context,
                    barrier=barrier)

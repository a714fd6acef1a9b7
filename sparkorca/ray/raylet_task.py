"""What runs inside a Spark task to start the raylet of its executor.

Imported on executors, so it stays light: no Ray import (the raylet is started
by the node_runner process), only pyspark, psutil and the node layer.
"""

from __future__ import annotations

from ..node.host import node_dir
from ..node.task import TaskSlot, this_task
from .node import RayNodeConfig, launch_ray_node

KIND = "ray"


def node_temp_dir(cluster_id: str, name: str) -> str:
    """A node's temp dir, by the Spark executor it serves ("driver" on a local
    master): processes on that executor find their raylet through it."""
    return node_dir(KIND, cluster_id, name)


def place_raylet(base: RayNodeConfig, slot: TaskSlot) -> RayNodeConfig:
    """``base`` (the cluster's raylet config) for the executor of ``slot``."""
    name = f"executor-{slot.executor_id}"
    options = {**base.options, "node_ip_address": slot.host, "num_gpus": slot.num_gpus,
               "node_name": f"{base.options['node_name']}-{name}"}
    return base.placed(name=name, executor_id=slot.executor_id, host=slot.host,
                       owner_pid=slot.executor_pid, options=options,
                       temp_dir=node_temp_dir(base.cluster_id, slot.executor_id),
                       env={**base.env, **slot.gpu_env})


def start_raylet(base: RayNodeConfig, barrier: bool, partition: int, _rows):
    """mapPartitionsWithIndex body: start this executor's raylet, wait for it,
    hand it over (it outlives the task, tied to the executor JVM and the driver)."""
    import os
    slot = this_task(partition, barrier)
    cfg = place_raylet(base, slot)
    if not barrier and os.path.isdir(cfg.temp_dir):
        yield {"executor_id": slot.executor_id, "started": False}  # it has one already
        return
    node = launch_ray_node(cfg, f"the raylet of Spark executor {slot.executor_id} on "
                                f"{slot.host} (partition {partition})")
    node.wait_ready()
    if barrier:  # only once every raylet is up may they outlive their tasks
        # the driver may release as late as its own start deadlines allow; if it
        # gives up instead, it cancels this job
        node.wait_released(3 * cfg.ready_timeout)
    node.detach()
    yield {"executor_id": slot.executor_id, "started": True}

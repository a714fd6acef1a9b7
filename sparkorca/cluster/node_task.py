"""The Spark task that starts one TFCluster node on its executor.

Fed nodes (InputMode.SPARK workers and chief) are handed over once the whole
cluster has registered, so their executor slot is free for the feeding tasks;
ps and evaluator nodes, and every node in InputMode.TENSORFLOW, keep their task
(and so their executor) until the node ends.
"""

from __future__ import annotations

import shutil
from typing import List

from ..node.task import this_task
from .node import launch_node, node_temp_dir
from .node_config import TFNodeConfig


def place_node(base: TFNodeConfig, role: dict, executor_id: str, host: str, owner_pid: int,
               tensorboard_here: bool) -> TFNodeConfig:
    """The cluster's node config ``base`` for the node with ``role``, launched here."""
    return base.placed(name=str(role["worker_num"]), executor_id=executor_id, host=host,
                       owner_pid=owner_pid, temp_dir=node_temp_dir(base.cluster_id,
                                                                   role["worker_num"]),
                       worker_num=role["worker_num"], job_name=role["job_name"],
                       task_index=role["task_index"],
                       tensorboard=base.tensorboard and tensorboard_here)


def first_trainer(base: TFNodeConfig, role: dict) -> bool:
    """The node that runs TensorBoard: the chief, else worker 0."""
    return role["job_name"] == (base.master_node or "worker") and role["task_index"] == 0


def run_node(base: TFNodeConfig, payload: bytes, roles: List[dict], barrier: bool,
             partition: int, _rows):
    """mapPartitionsWithIndex body: start node ``roles[partition]`` here."""
    slot = this_task(partition, barrier)
    role = roles[partition]
    cfg = place_node(base, role, slot.executor_id, slot.host, slot.executor_pid,
                     first_trainer(base, role))
    node = launch_node(cfg, payload, slot.gpu_env, f"on Spark executor {slot.executor_id}")
    node.wait_ready()
    if cfg.holds_executor:
        code = node.proc.wait()
        shutil.rmtree(cfg.temp_dir, ignore_errors=True)  # even if the node was killed
    else:
        node.detach()
        code = None
    yield {"worker_num": cfg.worker_num, "executor_id": slot.executor_id, "exit_code": code}

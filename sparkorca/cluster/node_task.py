"""The Spark task that starts one TFCluster node on its executor.

Fed nodes (InputMode.SPARK workers and chief) are handed over once the whole
cluster has registered, so their executor slot is free for the feeding tasks;
ps and evaluator nodes, and every node in InputMode.TENSORFLOW, keep their task
(and so their executor) until the node ends.
"""

from __future__ import annotations

from .._process import wait_ready
from ..config import node_ip
from ..spark.executor import executor_id, executor_jvm, gpu_env
from . import node as nodemod
from .roles import HELD_ROLES, InputMode


def node_cfg(base: dict, role: dict, exec_id: str, host: str, owner_pid: int) -> dict:
    """The configuration of one node process: the cluster's, plus who it is."""
    main = base["master_node"] or "worker"
    first_trainer = role["job_name"] == main and role["task_index"] == 0
    return {**base, **role, "executor_id": exec_id, "host": host, "owner_pid": owner_pid,
            "node_dir": nodemod.node_dir(base["cluster_id"], role["worker_num"]),
            "tensorboard_here": bool(base["tensorboard"]) and first_trainer}


def holds_executor(cfg: dict) -> bool:
    return cfg["input_mode"] == InputMode.TENSORFLOW or cfg["job_name"] in HELD_ROLES


def run_node(base: dict, payload: bytes, spark_roles: list, partition: int, _rows):
    """mapPartitionsWithIndex body: start node ``spark_roles[partition]`` here."""
    from pyspark import BarrierTaskContext, TaskContext
    task = BarrierTaskContext.get() if base["barrier"] else TaskContext.get()
    jvm = executor_jvm()
    exec_id = executor_id(jvm)
    cfg = node_cfg(base, spark_roles[partition], exec_id, node_ip(), jvm.pid)
    what = (f"TFCluster node {cfg['worker_num']} ({cfg['job_name']}:{cfg['task_index']}) on "
            f"Spark executor {exec_id}")
    node = nodemod.launch(cfg, payload, gpu_env(task), what)
    wait_ready(node)
    if holds_executor(cfg):
        code = node.proc.wait()
    else:
        node.detach()
        code = None
    yield {"worker_num": cfg["worker_num"], "executor_id": exec_id, "exit_code": code}

"""What runs inside a Spark task to start the raylet of its executor.

Imported on executors, so it stays light: no Ray import (the raylet is started
by the node_runner process), only pyspark, psutil and sparkorca's launcher.
"""

from __future__ import annotations

from ..config import node_ip
from ..spark.executor import executor_id, executor_jvm, gpu_env
from .._process import wait_ready
from .launch import free_ports, node_temp_dir, start_node


def raylet_options(cfg: dict, host: str, exec_id: str, gpus: int) -> dict:
    """``ray start`` options of the raylet of executor ``exec_id``."""
    return {
        "address": cfg["gcs_address"], "node_ip_address": host,
        "num_cpus": cfg["num_cpus"], "num_gpus": gpus,
        "object_store_memory": cfg["object_store_memory"],
        "dashboard_agent_listen_port": free_ports(1)[0],
        "node_name": f"{cfg['node_prefix']}-executor-{exec_id}",
        "disable_usage_stats": True, **cfg["extra_params"]}


def start_raylet(cfg: dict, partition: int, _rows):
    """mapPartitions body: start this executor's raylet, wait for it, hand it over."""
    from pyspark import BarrierTaskContext, TaskContext
    ctx = BarrierTaskContext.get() if cfg["barrier"] else TaskContext.get()
    jvm = executor_jvm()
    exec_id = executor_id(jvm)
    host = node_ip()
    env = {**cfg["env"], **gpu_env(ctx)}
    gpus = len(env["CUDA_VISIBLE_DEVICES"].split(",")) if "CUDA_VISIBLE_DEVICES" in env else 0
    options = raylet_options(cfg, host, exec_id, gpus)
    node = start_node(options, env, owner_pid=jvm.pid, ready_timeout=cfg["ready_timeout"],
                      what=f"the raylet of Spark executor {exec_id} on {host} (partition "
                           f"{partition})",
                      temp_dir=node_temp_dir(cfg["cluster_id"], exec_id))
    wait_ready(node)
    if cfg["barrier"]:
        ctx.barrier()  # every raylet is up: only now may they outlive their tasks
    node.detach()
    yield raylet_record(partition, exec_id, host, jvm.pid, node, options)


def raylet_record(partition, exec_id, host, executor_pid, node, options) -> dict:
    """What the driver keeps about one started raylet."""
    return {"partition": partition, "executor_id": exec_id, "host": host,
            "executor_pid": executor_pid, "runner_pid": node.runner_pid,
            "temp_dir": node.temp_dir, "node_name": options["node_name"]}

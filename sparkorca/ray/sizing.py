"""How big the Ray cluster inside a Spark application is. Pure: no I/O.

The capacity of the Spark application is read from its master URL and conf (the
rendered launch before start, or the running context's conf when adopting), and
the Ray request is checked against it before anything waits on executors.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

from ..config import ContextSpec, parse_memory
from ..errors import InvalidArgumentError

# Ray refuses object stores below 75 MiB.
MIN_OBJECT_STORE = 78 << 20
OBJECT_STORE_FRACTION = 0.3


@dataclasses.dataclass(frozen=True)
class SparkCapacity:
    """Executors the application has (or will have) and cores of each."""

    executors: int
    cores: int
    local: bool


@dataclasses.dataclass(frozen=True)
class RayPlan:
    num_ray_nodes: int
    node_cpus: int
    node_object_store: int
    head_object_store: int
    barrier: bool
    include_webui: bool = False
    # local master: the one executor is the driver JVM, so its raylet is started
    # by the driver beside the head instead of from a Spark task.
    local: bool = False


def spark_capacity(master: str, conf: dict) -> SparkCapacity:
    """Read executors x cores from a master URL and Spark conf."""
    m = re.match(r"^local\[(\d+|\*)(?:,\d+)?\]$", master)
    if master == "local" or m:
        n = m.group(1) if m else "1"
        return SparkCapacity(1, os.cpu_count() or 1 if n == "*" else int(n), True)
    m = re.match(r"^local-cluster\[(\d+),\s*(\d+),\s*\d+\]$", master)
    if m:
        return SparkCapacity(int(m.group(1)), int(m.group(2)), False)
    cores = int(conf.get("spark.executor.cores", "1"))
    if "spark.executor.instances" in conf:
        executors = int(conf["spark.executor.instances"])
    elif "spark.cores.max" in conf:
        executors = max(1, int(conf["spark.cores.max"]) // cores)
    else:
        executors = 1
    return SparkCapacity(executors, cores, False)


def _memory_for_ray(spec: ContextSpec) -> int:
    return (spec.extra_executor_memory_for_ray or spec.memory).num_bytes


def plan_ray(spec: ContextSpec, capacity: SparkCapacity, barrier: bool,
             driver_memory: Optional[str] = None) -> RayPlan:
    """Validate the Ray request against the Spark application and size it.

    Raises InvalidArgumentError naming the parameter when the request exceeds
    what the application has.
    """
    nodes = spec.num_ray_nodes or capacity.executors
    if nodes > capacity.executors:
        raise InvalidArgumentError(
            "num_ray_nodes", nodes,
            f"at most {capacity.executors}, the number of Spark executors of this application "
            "(one raylet runs per executor)",
            hint="raise num_nodes or lower num_ray_nodes")
    cpus = spec.ray_node_cpu_cores or capacity.cores
    if cpus > capacity.cores:
        raise InvalidArgumentError(
            "ray_node_cpu_cores", cpus,
            f"at most {capacity.cores}, the cores of one Spark executor",
            hint="raise cores or lower ray_node_cpu_cores")
    if spec.object_store_memory:
        store = spec.object_store_memory.num_bytes
        if store < MIN_OBJECT_STORE:
            raise InvalidArgumentError("object_store_memory", spec.object_store_memory.text,
                                       "at least '78m' (Ray's minimum object store)")
        head_store = store
    else:
        store = max(MIN_OBJECT_STORE, int(_memory_for_ray(spec) * OBJECT_STORE_FRACTION))
        head_memory = (parse_memory("driver_memory", driver_memory) if driver_memory
                       else spec.driver_memory.num_bytes)
        head_store = max(MIN_OBJECT_STORE, int(head_memory * OBJECT_STORE_FRACTION))
    return RayPlan(num_ray_nodes=nodes, node_cpus=cpus, node_object_store=store,
                   head_object_store=head_store, barrier=barrier,
                   include_webui=spec.include_webui, local=capacity.local)

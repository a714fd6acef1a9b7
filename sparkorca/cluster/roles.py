"""Who is who in a TFCluster, and the environment each node gets. Pure functions.

A cluster of ``num_executors`` nodes is numbered by ``worker_num``: the ps nodes
first, then the chief (``master_node``), then the evaluator (``eval_node``), then
the workers, as TensorFlowOnSpark laid them out.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Dict, List, Optional, Sequence

from ..errors import InvalidArgumentError

PS = "ps"
WORKER = "worker"
EVALUATOR = "evaluator"
# Roles that hold their executor until shutdown and are never fed.
HELD_ROLES = (PS, EVALUATOR)


class InputMode:
    """How a TFCluster's nodes get their data."""

    TENSORFLOW = 0  # the nodes read their data themselves
    SPARK = 1       # Spark feeds RDD / DataFrame partitions through cluster.train()


@dataclasses.dataclass(frozen=True)
class NodeRole:
    worker_num: int
    job_name: str
    task_index: int
    on_driver: bool = False

    @property
    def fed(self) -> bool:
        return self.job_name not in HELD_ROLES


def _count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(name, value, f"an integer >= {minimum}")
    return int(value)


def plan_roles(num_executors, num_ps=0, master_node: Optional[str] = None,
               eval_node: bool = False, driver_ps_nodes: bool = False) -> List[NodeRole]:
    """The role of every node, validated; raises before anything starts."""
    n = _count("num_executors", num_executors, 1)
    num_ps = _count("num_ps", num_ps, 0)
    if master_node is not None and (not isinstance(master_node, str) or not master_node
                                    or master_node in (PS, WORKER, EVALUATOR)):
        raise InvalidArgumentError("master_node", master_node,
                                   "None or a job name such as 'chief' (not ps/worker/evaluator)")
    for name, flag in (("eval_node", eval_node), ("driver_ps_nodes", driver_ps_nodes)):
        if not isinstance(flag, bool):
            raise InvalidArgumentError(name, flag, "True or False")
    if num_ps + eval_node >= n:
        raise InvalidArgumentError(
            "num_executors", num_executors,
            f"more than num_ps={num_ps}"
            + (" plus the evaluator" if eval_node else "")
            + ": at least one node must train (a chief or a worker)",
            hint="num_executors counts every node of the cluster, ps nodes included")
    if driver_ps_nodes and num_ps == 0:
        raise InvalidArgumentError("driver_ps_nodes", driver_ps_nodes,
                                   "False when num_ps is 0 (there is no ps node to run)")
    roles = [NodeRole(i, PS, i, on_driver=driver_ps_nodes) for i in range(num_ps)]
    nxt = num_ps
    if master_node is not None:
        roles.append(NodeRole(nxt, master_node, 0))
        nxt += 1
    if eval_node:
        roles.append(NodeRole(nxt, EVALUATOR, 0))
        nxt += 1
    roles += [NodeRole(i, WORKER, i - nxt) for i in range(nxt, n)]
    return roles


def cluster_spec(cluster_info: Sequence[dict]) -> Dict[str, List[str]]:
    """``{job_name: ["host:port", ...]}`` ordered by task index."""
    spec: Dict[str, List[str]] = {}
    for node in sorted(cluster_info, key=lambda n: (n["job_name"], n["task_index"])):
        spec.setdefault(node["job_name"], []).append(f"{node['host']}:{node['port']}")
    return spec


def tf_config(cluster_info: Sequence[dict], job_name: str, task_index: int) -> str:
    """TF_CONFIG for one node, as MultiWorkerMirroredStrategy and friends read it."""
    return json.dumps({"cluster": cluster_spec(cluster_info),
                       "task": {"type": job_name, "index": task_index}})


def torch_ranks(cluster_info: Sequence[dict], master_node: Optional[str]) -> List[dict]:
    """The nodes that train, in rank order: the chief first, then the workers."""
    chief = [n for n in cluster_info if master_node is not None and n["job_name"] == master_node]
    workers = sorted((n for n in cluster_info if n["job_name"] == WORKER),
                     key=lambda n: n["task_index"])
    return chief + workers


def torch_env(cluster_info: Sequence[dict], master_node: Optional[str],
              worker_num: int) -> Dict[str, str]:
    """MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE for a
    training node, so ``torch.distributed.init_process_group()`` needs no arguments.
    ps and evaluator nodes get none."""
    ranked = torch_ranks(cluster_info, master_node)
    me = next((r for r, n in enumerate(ranked) if n["worker_num"] == worker_num), None)
    if me is None:
        return {}
    host = ranked[me]["host"]
    same_host = [n["worker_num"] for n in ranked if n["host"] == host]
    return {"MASTER_ADDR": ranked[0]["host"], "MASTER_PORT": str(ranked[0]["port"]),
            "RANK": str(me), "WORLD_SIZE": str(len(ranked)),
            "LOCAL_RANK": str(same_host.index(worker_num)),
            "LOCAL_WORLD_SIZE": str(len(same_host))}


def num_workers(cluster_info: Sequence[dict]) -> int:
    """Nodes that train (chief and workers), as TFoS's ctx.num_workers counted them."""
    return sum(1 for n in cluster_info if n["job_name"] not in HELD_ROLES)

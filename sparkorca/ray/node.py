"""One Ray node (the head, or an executor's raylet) as a node of the node layer:
its typed configuration and its launch. ``node_runner`` is the process."""

from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List

from ..node.config import NodeConfig
from ..node.launch import RunningNode, launch

RUNNER_MODULE = "sparkorca.ray.node_runner"
# Environment of every Ray process of a node: who supervises it (so a Ray task can
# ask its runner to stop the node) and which cluster it belongs to.
RUNNER_PID_ENV = "SPARKORCA_RAY_RUNNER_PID"
CLUSTER_ENV = "SPARKORCA_RAY_CLUSTER"


@dataclasses.dataclass(frozen=True)
class RayNodeConfig(NodeConfig):
    options: Dict[str, object] = dataclasses.field(default_factory=dict)  # ray start --key=value
    env: Dict[str, str] = dataclasses.field(default_factory=dict)  # of the node's Ray processes
    head: bool = False
    # Seconds a stopping raylet may take to unregister from the GCS (the head: none).
    stop_grace: float = 3.0
    # Leave how to join the cluster in the node's temp dir (owner-only), for
    # sparkorca.ray.connect() in Spark tasks that no driver could hand it to (Spark
    # Connect: the client has no SparkContext to put it in tasks' environment).
    advertise: bool = False


# In the node's temp dir when ``advertise``: the GCS address, cluster id and token.
JOIN_FILE = "sparkorca-join.json"


def write_join_file(cfg: RayNodeConfig, gcs_address: str) -> None:
    import json
    import os
    path = os.path.join(cfg.temp_dir, JOIN_FILE)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"address": gcs_address, "cluster_id": cfg.cluster_id,
                   "token": cfg.env.get("RAY_AUTH_TOKEN", "")}, f)
    os.replace(path + ".tmp", path)


def read_join_files(executor: str) -> List[dict]:
    """What every advertising raylet of Spark executor ``executor`` left on this
    machine (one per Ray cluster serving it)."""
    import glob
    import json
    import os

    from ..node.host import node_dir
    found = []
    for path in sorted(glob.glob(os.path.join(node_dir("ray", "*", executor), JOIN_FILE))):
        try:
            with open(path) as f:
                found.append({**json.load(f), "temp_dir": os.path.dirname(path)})
        except (OSError, ValueError):  # its runner is removing it
            continue
    return found


def ray_start_argv(options: Dict[str, object]) -> List[str]:
    """``ray start --block`` (without a Ray Client server: see ``ray_start``) with
    ``options`` as --key=value (True: a bare flag)."""
    argv = [sys.executable, "-m", "sparkorca.ray.ray_start", "start", "--block"]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        argv.append(flag if value is True else f"{flag}={value}")
    return argv


def launch_ray_node(config: RayNodeConfig, what: str) -> RunningNode:
    """Start a runner for ``config``; ``wait_ready()`` returns {"gcs_address": ...}."""
    return launch(RUNNER_MODULE, config, what, log_name="runner.log")

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

"""TFNodeConfig: what a TFCluster node is told at launch (see sparkorca.node.config)."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from ..node.config import NodeConfig
from .roles import HELD_ROLES, InputMode


@dataclasses.dataclass(frozen=True)
class TFNodeConfig(NodeConfig):
    worker_num: int = 0
    job_name: str = ""
    task_index: int = 0
    input_mode: int = InputMode.TENSORFLOW
    queues: List[str] = dataclasses.field(default_factory=list)
    master_node: Optional[str] = None
    tensorboard: bool = False     # start TensorBoard on this node (the first trainer)
    log_dir: Optional[str] = None
    release_port: bool = True
    default_fs: str = "file://"
    working_dir: str = ""
    train_data_store: str = "DRAM"
    serialize_data_creator: bool = False
    lock_path: str = ""

    @property
    def fed(self) -> bool:
        """InputMode.SPARK workers and chief: Spark feeds them."""
        return self.input_mode == InputMode.SPARK and self.job_name not in HELD_ROLES

    @property
    def holds_executor(self) -> bool:
        """ps and evaluator nodes, and every InputMode.TENSORFLOW node, keep the task
        (and its executor slot) that launched them until they end."""
        return not self.fed

    def describe(self) -> str:
        return f"TFCluster node {self.worker_num} ({self.job_name}:{self.task_index})"

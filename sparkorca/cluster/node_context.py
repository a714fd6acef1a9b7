"""``ctx``, the second argument of a TFCluster ``map_fun``: who this node is, and
the helpers TensorFlowOnSpark programs call on it."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
from typing import Callable, Dict, List, Optional

from ..errors import OrcaRuntimeError
from ..node.host import temp_root
from . import roles as rolemod
from .node_config import TFNodeConfig


def absolute_path(default_fs: str, working_dir: str, path: str) -> str:
    """A path with a filesystem scheme, as TFoS's ``hdfs_path`` made it.

    A path with a scheme is kept; an absolute path gets ``defaultFS``; a relative
    one goes under the user's HDFS home, or the driver's working dir for file://.
    """
    if "://" in path:
        return path
    if default_fs.startswith("file:"):
        return "file://" + (path if path.startswith("/") else f"{working_dir.rstrip('/')}/{path}")
    fs = default_fs.rstrip("/")
    if path.startswith("/"):
        return fs + path
    if fs.startswith(("hdfs://", "viewfs://")):
        return f"{fs}/user/{getpass.getuser()}/{path}"
    return f"{fs}/{path}"


class NodeContext:
    """What a node knows about itself and its cluster."""

    def __init__(self, cfg: TFNodeConfig, port: int, cluster_info: List[dict], mgr,
                 port_socket: Optional[socket.socket],
                 report: Optional[Callable[[dict], None]] = None):
        self.job_name: str = cfg.job_name
        self.task_index: int = cfg.task_index
        self.worker_num: int = cfg.worker_num
        self.executor_id: str = cfg.executor_id
        self.cluster_id: str = cfg.cluster_id
        self.defaultFS: str = cfg.default_fs
        self.working_dir: str = cfg.working_dir
        self.cluster_info: List[dict] = cluster_info
        self.cluster_spec: Dict[str, List[str]] = rolemod.cluster_spec(cluster_info)
        self.num_workers: int = rolemod.num_workers(cluster_info)
        self.mgr = mgr  # the node's feed (None in InputMode.TENSORFLOW)
        self.host: str = cfg.host
        self.port: int = port
        # TFoS's name: the socket holding the reserved port (None once released)
        self.tmp_socket: Optional[socket.socket] = port_socket
        self._serialize = cfg.serialize_data_creator
        self._lock_path = cfg.lock_path
        self._report = report

    def report(self, msg: dict) -> None:
        """Send a JSON message to the driver over the node's control connection (the
        Estimators' workers report each epoch's progress this way)."""
        if self._report is not None:
            self._report({"type": "progress", "worker_num": self.worker_num, "body": msg})

    def absolute_path(self, path: str) -> str:
        return absolute_path(self.defaultFS, self.working_dir, path)

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input",
                      qname_out: str = "output", input_mapping: Optional[dict] = None):
        from .feed import DataFeed
        if self.mgr is None:
            raise OrcaRuntimeError("this node has no data feed: the cluster runs "
                               "InputMode.TENSORFLOW, or this is a ps/evaluator node")
        return DataFeed(self.mgr, train_mode, qname_in, qname_out, input_mapping)

    def release_port(self) -> None:
        """Free the reserved port, so this node's TF / torch server can bind it."""
        if self.tmp_socket is not None:
            self.tmp_socket.close()
            self.tmp_socket = None

    def data_creator_lock(self):
        """A lock shared by the nodes on this machine while
        ``OrcaContext.serialize_data_creator`` is on (else it does nothing): wrap
        code that downloads or caches a dataset, so one node writes it at a time."""
        if not self._serialize:
            return contextlib.nullcontext()
        from filelock import FileLock
        return FileLock(self._lock_path)

    def __repr__(self) -> str:
        return (f"NodeContext(job_name={self.job_name!r}, task_index={self.task_index}, "
                f"worker_num={self.worker_num}, executor_id={self.executor_id!r}, "
                f"cluster_spec={self.cluster_spec})")


def lock_path(cluster_id: str) -> str:
    return os.path.join(temp_root(), f"sparkorca-tf-{cluster_id}-data.lock")

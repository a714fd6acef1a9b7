"""``ctx``, the second argument of a TFCluster ``map_fun``: who this node is, and
the helpers TensorFlowOnSpark programs call on it."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import socket
from typing import Callable, Dict, List, Optional

from ..errors import OrcaRuntimeError
from ..node.host import temp_root
from . import roles as rolemod
from .node_config import TFNodeConfig

log = logging.getLogger(__name__)

# A path that names its filesystem: "hdfs://nn/x", "gs://b/x", and Hadoop's "file:/x".
_QUALIFIED = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)$")


def absolute_path(default_fs: str, working_dir: str, path: str) -> str:
    """``path`` with a filesystem scheme, by TensorFlowOnSpark's ``hdfs_path`` rules.

    A path that has a scheme is kept; an absolute path gets ``default_fs``; a
    relative one goes under ``/user/<user>`` on hdfs:// and viewfs://, under
    ``working_dir`` on file://, and right under ``default_fs`` on other schemes.

    Where TFoS's results were accidents, this differs (and says so): any
    ``scheme:/`` path is kept (TFoS kept only ten Hadoop schemes and made
    "gs://b/x" relative: "file:///cwd/gs://b/x"); a trailing slash of
    ``default_fs`` is dropped ("hdfs://nn:8020/" gave "hdfs://nn:8020//x",
    "file:///" gave "file:////x"); and a relative ``working_dir`` (TFParallel's
    ".") is taken from this process's cwd (TFoS gave "file:////x", the root).

    Examples
    --------
    >>> absolute_path("hdfs://nn:8020", "/home/u/job", "/data/x")
    'hdfs://nn:8020/data/x'
    >>> absolute_path("file://", "/home/u/job", "model")
    'file:///home/u/job/model'
    """
    if _QUALIFIED.match(path):
        return path
    fs = _without_trailing_slash(default_fs)
    if path.startswith("/"):
        return fs + path
    if fs.startswith(("hdfs://", "viewfs://")):
        return f"{fs}/user/{getpass.getuser()}/{path}"
    if fs.startswith("file:"):  # "file://", and Hadoop's "file:/"
        return f"file://{os.path.abspath(working_dir).rstrip('/')}/{path}"
    log.warning("Unknown scheme %s with relative path: %s", default_fs, path)
    return f"{fs}/{path}"


def _without_trailing_slash(default_fs: str) -> str:
    """"hdfs://nn:8020/" -> "hdfs://nn:8020", "file:///" -> "file://"; a bare
    "hdfs://" keeps its "//" (the Hadoop client's default namenode)."""
    m = _SCHEME.match(default_fs)
    if m is None:
        return default_fs.rstrip("/")
    return m.group(1) + m.group(2).rstrip("/")


def release_port(ctx) -> None:
    """Close ``ctx.tmp_socket``, the socket that holds the node's reserved port, so
    the node's own server can bind that port (TFoS's ``TFNode.release_port``)."""
    if ctx.tmp_socket is not None:
        log.info("Releasing assigned port: %s", ctx.tmp_socket.getsockname())
        ctx.tmp_socket.close()
        ctx.tmp_socket = None
    else:
        log.warning("release_port() invoked with no bound socket.")


class NodeContext:
    """What a node knows about itself and its cluster: TFoS's ``TFNodeContext``.

    Its attributes as TFoS had them: ``executor_id`` and ``worker_num`` (the node's
    number, 0..num_executors-1), ``job_name``, ``task_index``, ``cluster_spec``,
    ``num_workers`` (chief and workers), ``defaultFS``, ``working_dir`` (the
    driver's), ``mgr`` (the feed ``TFNode.DataFeed`` reads; None in
    InputMode.TENSORFLOW) and ``tmp_socket`` (the socket that holds ``port``
    until ``release_port()``; None already unless ``TFCluster.run(...,
    release_port=False)``). sparkorca adds ``host``, ``port``, ``cluster_info``,
    ``spark_executor_id``, ``report()`` and ``data_creator_lock()``.
    """

    def __init__(self, cfg: TFNodeConfig, port: int, cluster_info: List[dict], mgr,
                 port_socket: Optional[socket.socket],
                 report: Optional[Callable[[dict], None]] = None):
        self.job_name: str = cfg.job_name
        self.task_index: int = cfg.task_index
        self.worker_num: int = cfg.worker_num
        self.executor_id: int = cfg.worker_num  # TFoS: the node's number, as worker_num
        self.spark_executor_id: str = cfg.executor_id  # "driver" for driver_ps_nodes
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
        """Free the reserved port, so this node's TF / torch server can bind it
        (warns, as TFoS did, when there is no socket to close)."""
        release_port(self)

    def start_cluster_server(self, num_gpus: int = 1, rdma: bool = False):
        """Gone with TensorFlow 1.x: raises, saying what replaces it."""
        from . import TFNode
        return TFNode.start_cluster_server(self, num_gpus, rdma)

    def export_saved_model(self, sess, export_dir, tag_set, signatures) -> None:
        """Gone with TensorFlow 1.x: raises, saying what replaces it."""
        from . import TFNode
        TFNode.export_saved_model(sess, export_dir, tag_set, signatures)

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
                f"worker_num={self.worker_num}, spark_executor_id={self.spark_executor_id!r}, "
                f"cluster_spec={self.cluster_spec})")


def lock_path(cluster_id: str) -> str:
    return os.path.join(temp_root(), f"sparkorca-tf-{cluster_id}-data.lock")

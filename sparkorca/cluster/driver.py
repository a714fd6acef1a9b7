"""TFCluster: TensorFlowOnSpark's driver API on sparkorca.

``run()`` validates everything, starts the authenticated reservation server on
the driver address, launches one node per executor from a (barrier) Spark job,
and returns once every node has registered and got the cluster. ``train()`` /
``inference()`` stream partitions to the nodes as Arrow; ``shutdown()`` ends
the feed, waits for the nodes' results, and stops every node.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import numbers
import os
import pickle
import secrets
import threading
from typing import List, Optional

from .._wait import wait_for
from ..spark.executor import partition_id
from ..spark.session import job_error_text
from ..errors import InvalidArgumentError, OrcaRuntimeError, StartupTimeoutError
from . import feeder
from . import roles as rolemod
from .node_context import lock_path
from .reservation import FINAL, ReservationServer
from .roles import InputMode

log = logging.getLogger(__name__)

EXECUTOR_WAIT = 120.0


def _positive(name, value, allow_forever=False):
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and (value > 0 or (allow_forever and value == -1)))
    if not ok:
        raise InvalidArgumentError(name, value, "a number of seconds > 0"
                                   + (" (or -1: no limit)" if allow_forever else ""))
    return float(value)


class TFCluster:
    """A running TFCluster (see ``run``). Attributes as TensorFlowOnSpark had them."""

    def __init__(self):
        self.sc = None
        self.defaultFS: Optional[str] = None
        self.working_dir: Optional[str] = None
        self.num_executors: Optional[int] = None
        self.nodeRDD = None
        self.cluster_id: Optional[str] = None
        self.cluster_info: Optional[List[dict]] = None
        self.cluster_meta: Optional[dict] = None
        self.input_mode: Optional[int] = None
        self.queues: Optional[List[str]] = None
        self.server: Optional[ReservationServer] = None
        self._roles: List[rolemod.NodeRole] = []
        self._secret = b""
        self._job_group = ""
        self._job_thread: Optional[threading.Thread] = None
        self._job_error: Optional[BaseException] = None
        self._driver_nodes = []
        self._stopped = False
        self.fed_rows = 0  # rows the nodes took in the last train()'s first epoch

    # -- helpers ------------------------------------------------------------
    def _fed_nums(self) -> List[int]:
        return [r.worker_num for r in self._roles if r.fed]

    def _held_nums(self) -> List[int]:
        return [r.worker_num for r in self._roles if not r.fed]

    def _check_nodes(self) -> None:
        failures = self.server.failures()
        if failures:
            raise OrcaRuntimeError("TFCluster: " + "\n\n".join(failures))

    def _feed_cfg(self, qname: str, feed_timeout: float, epochs: int) -> dict:
        nodes = [dict(n) for n in self.cluster_info if n["socket"]]
        return {"nodes": nodes, "secret": self._secret.hex(), "qname": qname,
                "feed_timeout": feed_timeout, "epochs": epochs,
                "feed_id": secrets.token_hex(6)}

    def _check_feed_args(self, qname, feed_timeout):
        if self._stopped:
            raise OrcaRuntimeError("this TFCluster has been shut down")
        if self.input_mode != InputMode.SPARK:
            raise OrcaRuntimeError("train() and inference() feed InputMode.SPARK clusters; "
                                   "this one runs InputMode.TENSORFLOW (its nodes read "
                                   "their own data)")
        if qname not in self.queues:
            raise InvalidArgumentError("qname", qname, f"one of the cluster's queues {self.queues}")
        return _positive("feed_timeout", feed_timeout)

    def _run_job(self, action, description: str) -> None:
        """Run a Spark job; fail at once if a node fails or is lost meanwhile."""
        group = f"sparkorca-tf-{self.cluster_id}-{secrets.token_hex(3)}"
        box: dict = {}

        def body():
            try:
                self.sc.setJobGroup(group, description, interruptOnCancel=True)
                box["result"] = action()
            except BaseException as e:
                box["error"] = e
            finally:
                with self.server.cond:
                    box["done"] = True
                    self.server.cond.notify_all()
        t = threading.Thread(target=body, name="sparkorca-feed-job", daemon=True)
        t.start()
        why = self.server.wait(lambda: "done" in box, None,
                               lambda: "nodes" if self.server.failures() else None)
        if why == "nodes":
            self.sc.cancelJobGroup(group)
            t.join(60)
            self._check_nodes()
        t.join()
        if "error" in box:
            self._check_nodes()  # a node's own failure explains a failed feed best
            raise OrcaRuntimeError(f"TFCluster {description} failed:\n"
                                   f"{job_error_text(box['error'])}") from None
        return box.get("result")

    # -- feeding ------------------------------------------------------------
    def train(self, dataRDD, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input"):
        """Feed ``dataRDD`` (an RDD, a DataFrame, or sparkorca.data Shards) to the
        worker nodes, ``num_epochs`` times. Epochs after the first are replayed by
        each node from ``OrcaContext.train_data_store``, not re-read by Spark."""
        if (isinstance(num_epochs, bool) or not isinstance(num_epochs, numbers.Integral)
                or num_epochs < 1):
            raise InvalidArgumentError("num_epochs", num_epochs, "an integer >= 1",
                                       hint="TensorFlowOnSpark read 0 as 10 epochs; say how many")
        feed_timeout = self._check_feed_args(qname, feed_timeout)
        self._check_nodes()
        cfg = self._feed_cfg(qname, feed_timeout, int(num_epochs))
        action = _train_action(dataRDD, cfg)
        rows = self._run_job(action, f"train(): feed {type(dataRDD).__name__} to the nodes")
        fed = self._fed_nums()
        if num_epochs > 1:
            self.server.send(fed, {"type": "replay", "qname": qname, "feed_id": cfg["feed_id"],
                                   "epochs": int(num_epochs) - 1, "feed_timeout": feed_timeout})
            nodes = [self.server.nodes[k] for k in fed]
            why = self.server.wait(
                lambda: all(cfg["feed_id"] in n.replayed or n.state != "running" for n in nodes),
                None, lambda: "nodes" if self.server.failures() else None)
            if why:
                self._check_nodes()
            errors = [n.replayed[cfg["feed_id"]]["error"] for n in nodes
                      if cfg["feed_id"] in n.replayed and n.replayed[cfg["feed_id"]]["error"]]
            if errors:
                raise OrcaRuntimeError("TFCluster train(): " + "; ".join(errors))
        self.server.send(fed, {"type": "flush", "qname": qname})
        self.fed_rows = sum(rows or [])
        log.info("TFCluster train(): %d rows fed (first epoch)", self.fed_rows)

    def inference(self, dataRDD, feed_timeout: float = 600, qname: str = "input"):
        """An RDD with one result per input row, in order, computed lazily by the
        nodes' ``DataFeed.batch_results``."""
        feed_timeout = self._check_feed_args(qname, feed_timeout)
        self._check_nodes()
        return _inference_rdd(dataRDD, self._feed_cfg(qname, feed_timeout, 1))

    # -- the end ------------------------------------------------------------
    def shutdown(self, ssc=None, grace_secs: float = 0, timeout: float = 259200) -> None:
        """End the feed, wait for the nodes' map_fun, then stop every node.

        Raises the traceback of any node whose map_fun failed, names lost nodes,
        and after ``timeout`` seconds (-1: none) stops a stuck cluster and raises.
        """
        if self._stopped:
            return
        if ssc is not None:
            ssc.awaitTermination()  # Spark Streaming: feeding ends with the stream
        if not (isinstance(grace_secs, numbers.Real) and grace_secs >= 0):
            raise InvalidArgumentError("grace_secs", grace_secs, "a number of seconds >= 0")
        timeout = _positive("timeout", timeout, allow_forever=True)
        limit = None if timeout == -1 else timeout
        timed_out = None
        try:
            fed = self._fed_nums()
            if self.input_mode == InputMode.SPARK:
                self.server.send(fed, {"type": "end"})
            workers = [self.server.nodes[k] for k in fed] if fed else []
            why = self.server.wait(lambda: all(n.state in FINAL for n in workers), limit)
            if why == "timeout":
                timed_out = [n.describe() for n in workers if n.state not in FINAL]
            elif grace_secs:
                held = [self.server.nodes[k] for k in self._held_nums()]
                self.server.wait(lambda: all(n.state in FINAL for n in held), grace_secs)
        finally:
            self._stop_nodes()
        if timed_out:
            raise StartupTimeoutError(
                f"TFCluster shutdown: timed out after timeout={timeout:g}s waiting for "
                f"{', '.join(timed_out)} to finish map_fun; every node was stopped")
        self._check_nodes()

    def _stop_nodes(self) -> None:
        """Stop every node and wait for their Spark job to end; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        server = self.server
        with server.cond:
            server.closing = True
        server.send(list(server.nodes), {"type": "stop"})
        try:
            # a node closes its connection when its process exits, after its children
            wait_for(lambda: not any(n.connected for n in server.nodes.values()), 30,
                     "the TFCluster nodes to stop")
        except (StartupTimeoutError, OrcaRuntimeError) as e:
            log.warning("%s; cancelling their Spark job", e)
            self.sc.cancelJobGroup(self._job_group)
        if self._job_thread is not None:
            self._job_thread.join(60)
            if self._job_thread.is_alive():
                self.sc.cancelJobGroup(self._job_group)
                self._job_thread.join(30)
        for node in self._driver_nodes:
            node.stop()
        server.close()

    def tensorboard_url(self) -> Optional[str]:
        for node in self.cluster_info or []:
            if node.get("tb_port"):
                return f"http://{node['host']}:{node['tb_port']}"
        return None


def _train_action(data, cfg):
    from pyspark import RDD
    from pyspark.sql import DataFrame
    train = feeder.train_partition
    if isinstance(data, DataFrame):
        def feed_arrow(batches):
            import pyarrow as pa
            n = train(cfg, partition_id(), iter(batches))
            yield pa.RecordBatch.from_pydict({"rows": [n]})
        return lambda: [r.rows for r in data.mapInArrow(feed_arrow, "rows long").collect()]
    if hasattr(data, "to_arrow_rdd"):  # sparkorca.data.Shards
        rdd = data.to_arrow_rdd()
        return lambda: rdd.mapPartitionsWithIndex(
            lambda i, it: [train(cfg, i, it)]).collect()
    if isinstance(data, RDD):
        from .rows import rows_to_batches
        return lambda: data.mapPartitionsWithIndex(
            lambda i, it: [train(cfg, i, rows_to_batches(it))]).collect()
    raise InvalidArgumentError("dataRDD", type(data).__name__,
                               "a pyspark RDD, a pyspark DataFrame or sparkorca.data Shards")


def _inference_rdd(data, cfg):
    from pyspark import RDD
    from pyspark.sql import DataFrame
    infer = feeder.inference_partition
    if isinstance(data, DataFrame):
        def infer_arrow(batches):
            import pyarrow as pa
            for results in infer(cfg, partition_id(), iter(batches)):
                yield pa.RecordBatch.from_pydict({"r": [pickle.dumps(results, protocol=5)]})
        return data.mapInArrow(infer_arrow, "r binary").rdd.flatMap(lambda row: pickle.loads(row.r))
    if isinstance(data, RDD):
        from .rows import rows_to_batches
        return data.mapPartitionsWithIndex(
            lambda i, it: (r for results in infer(cfg, i, rows_to_batches(it)) for r in results))
    raise InvalidArgumentError("dataRDD", type(data).__name__, "a pyspark RDD or DataFrame")


def run(sc, map_fun, tf_args, num_executors, num_ps=0, tensorboard=False,
        input_mode=InputMode.TENSORFLOW, log_dir=None, driver_ps_nodes=False,
        master_node=None, reservation_timeout=600, queues=("input", "output", "error"),
        eval_node=False, release_port=True) -> TFCluster:
    """Start a TFCluster of ``num_executors`` nodes and run ``map_fun(tf_args, ctx)``
    on each (TensorFlowOnSpark's ``TFCluster.run``).

    Examples
    --------
    >>> cluster = TFCluster.run(sc, main_fun, args, num_executors=2, num_ps=0,
    ...                         input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    >>> cluster.train(df, num_epochs=3)
    >>> cluster.shutdown()
    """
    roles = rolemod.plan_roles(num_executors, num_ps, master_node, eval_node, driver_ps_nodes)
    if not callable(map_fun):
        raise InvalidArgumentError("map_fun", map_fun, "a function map_fun(args, ctx)")
    if input_mode not in (InputMode.TENSORFLOW, InputMode.SPARK):
        raise InvalidArgumentError("input_mode", input_mode,
                                   "InputMode.TENSORFLOW (0) or InputMode.SPARK (1)")
    reservation_timeout = _positive("reservation_timeout", reservation_timeout)
    queues = list(queues)
    if not queues or not all(isinstance(q, str) and q for q in queues):
        raise InvalidArgumentError("queues", queues, "a non-empty list of queue names")
    if not isinstance(tensorboard, bool):
        raise InvalidArgumentError("tensorboard", tensorboard, "True or False")
    if log_dir is not None and not isinstance(log_dir, str):
        raise InvalidArgumentError("log_dir", log_dir, "None or a directory path")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise InvalidArgumentError("tensorboard", True,
                                   "False, or install tensorboard (pip install tensorboard)")
    from pyspark import cloudpickle
    from ..context import OrcaContext
    from ..spark.session import wait_for_executors

    spark_roles = [role_dict(r) for r in roles if not r.on_driver]
    wait_for_executors(sc, len(spark_roles), EXECUTOR_WAIT,
                       f"starting {len(spark_roles)} TFCluster node(s) on them")
    _check_slots(sc, len(spark_roles))
    cluster = TFCluster()
    cluster.sc = sc
    cluster.num_executors = len(roles)
    cluster.input_mode = input_mode
    cluster.queues = queues
    cluster._roles = roles
    cluster._secret = secrets.token_bytes(32)
    cluster.cluster_id = secrets.token_hex(4)
    cluster._job_group = f"sparkorca-tf-{cluster.cluster_id}"
    fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    cluster.defaultFS = fs[:-1] if fs.startswith("file://") and fs.endswith("/") else fs
    cluster.working_dir = os.getcwd()
    payload = cloudpickle.dumps((map_fun, tf_args))
    driver_host = sc.getConf().get("spark.driver.host")
    cluster.server = ReservationServer(driver_host, cluster._secret, roles)
    base = {"cluster_id": cluster.cluster_id, "secret": cluster._secret.hex(),
            "driver_host": driver_host, "driver_port": cluster.server.address[1],
            "input_mode": input_mode, "queues": queues, "tensorboard": tensorboard,
            "log_dir": log_dir, "release_port": release_port, "master_node": master_node,
            "default_fs": cluster.defaultFS, "working_dir": cluster.working_dir,
            "reservation_timeout": reservation_timeout,
            "train_data_store": OrcaContext.train_data_store,
            "serialize_data_creator": bool(OrcaContext.serialize_data_creator),
            "lock_path": lock_path(cluster.cluster_id),
            "barrier": bool(OrcaContext.barrier_mode)}
    cluster.cluster_meta = {"id": cluster.cluster_id, "num_executors": len(roles),
                            "default_fs": cluster.defaultFS, "working_dir": cluster.working_dir,
                            "server_addr": list(cluster.server.address),
                            "cluster_template": _template(roles)}
    cluster.nodeRDD = sc.parallelize(range(len(spark_roles)), len(spark_roles))
    try:
        _start_driver_nodes(cluster, base, payload, roles)
        _start_node_job(cluster, base, payload, spark_roles)
        cluster.cluster_info = cluster.server.wait_registered(
            reservation_timeout, lambda: _job_failed(cluster),
            lambda: _progress(cluster, len(spark_roles)))
        from .._process import wait_ready
        for node in cluster._driver_nodes:
            wait_ready(node)
    except BaseException:
        for n in cluster.server.nodes.values():
            if n.info is not None:
                cluster.server._send(n, {"type": "abort", "why": "the reservation failed"})
        cluster.sc.cancelJobGroup(cluster._job_group)
        cluster._stop_nodes()
        raise
    _register_with_context(cluster)
    tb = cluster.tensorboard_url()
    if tb:
        log.info("TensorBoard of TFCluster %s: %s", cluster.cluster_id, tb)
    return cluster


def _check_slots(sc, needed: int) -> None:
    """Each Spark-run node needs a task slot for as long as it runs: refuse a cluster
    larger than the application (unless dynamic allocation may grow it)."""
    conf = sc.getConf()
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return
    slots = sc.defaultParallelism // max(1, int(conf.get("spark.task.cpus", "1")))
    if needed > slots:
        raise InvalidArgumentError(
            "num_executors", needed, f"at most {slots}: the Spark application has {slots} "
            "task slot(s) and every node started by Spark holds one",
            hint="start the context with more executors or cores, or use driver_ps_nodes")


def role_dict(role: rolemod.NodeRole) -> dict:
    return {"worker_num": role.worker_num, "job_name": role.job_name,
            "task_index": role.task_index}


def _template(roles) -> dict:
    template: dict = {}
    for r in roles:
        template.setdefault(r.job_name, []).append(r.worker_num)
    return template


def _start_driver_nodes(cluster: TFCluster, base: dict, payload: bytes, roles) -> None:
    from ..config import node_ip
    from . import node as nodemod
    from .node_task import node_cfg
    for r in roles:
        if not r.on_driver:
            continue
        cfg = node_cfg(base, role_dict(r), "driver", node_ip(), os.getpid())
        cluster._driver_nodes.append(nodemod.launch(
            cfg, payload, {}, f"TFCluster node {r.worker_num} ({r.job_name}:{r.task_index}) "
                              "on the driver"))


def _start_node_job(cluster: TFCluster, base: dict, payload: bytes, spark_roles) -> None:
    from .node_task import run_node
    sc = cluster.sc

    def body():
        try:
            sc.setJobGroup(cluster._job_group, "sparkorca: TFCluster nodes",
                           interruptOnCancel=True)
            rdd = cluster.nodeRDD.barrier() if base["barrier"] else cluster.nodeRDD
            rdd.mapPartitionsWithIndex(
                functools.partial(run_node, base, payload, spark_roles)).collect()
        except BaseException as e:
            cluster._job_error = e
            with cluster.server.cond:
                cluster.server.cond.notify_all()

    cluster._job_thread = threading.Thread(target=body, name="sparkorca-tf-nodes", daemon=True)
    cluster._job_thread.start()


def _job_failed(cluster: TFCluster) -> Optional[str]:
    if cluster._job_error is not None:
        return f"the node job failed:\n{job_error_text(cluster._job_error)}"
    for node in cluster._driver_nodes:
        if node.proc.poll() is not None:
            return f"{node.what} exited with code {node.proc.returncode}"
    return None


def _progress(cluster: TFCluster, n_tasks: int) -> str:
    """Why nodes may be missing, from what the driver knows for sure (the status
    tracker's task counts lag when the UI is off)."""
    registered = sum(1 for n in cluster.server.nodes.values() if n.info is not None)
    executors = max(0, len(cluster.sc.statusTracker().getExecutorInfos()) - 1)
    return (f"{registered} of the {n_tasks} node task(s) Spark was asked to run have "
            f"started; the application has {executors} executor(s) besides the driver and "
            f"{cluster.sc.defaultParallelism} task slot(s). A node's task waits while no "
            "slot is free: each node holds one for as long as the cluster runs (ps nodes "
            "and InputMode.TENSORFLOW nodes), and other jobs may hold the rest. A task that "
            "failed is reported by Spark with its executor's log.")


def _register_with_context(cluster: TFCluster) -> None:
    """stop_orca_context() stops a cluster its program did not shut down."""
    from ..context import running_context
    running = running_context()
    if running is not None and running.sc is cluster.sc:
        running.stack.callback(cluster._stop_nodes)

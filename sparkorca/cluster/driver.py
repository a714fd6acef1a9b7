"""TFCluster: TensorFlowOnSpark's driver API on sparkorca.

``run()`` validates everything into a ClusterPlan, and a TFCluster built from it
starts the authenticated reservation (a node hub) on the driver's address,
launches one node per executor from a (barrier) Spark job, and returns once
every node has registered and got the cluster. ``train()`` / ``inference()``
stream partitions to the nodes as Arrow; ``shutdown()`` ends the feed, waits for
the nodes' results, and stops every node.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import pickle
import secrets
import weakref
from typing import TYPE_CHECKING, Callable, List, Optional

from .. import _validate as check
from ..config import FlagValues
from ..errors import InvalidArgumentError, OrcaRuntimeError, StartupTimeoutError
from ..node.hub import FINAL, NodeState
from ..node.job import SparkJob, node_task_action, over_connect
from ..node.launch import RunningNode
from ..spark.executor import partition_id
from . import feeder
from . import roles as rolemod
from .node_config import TFNodeConfig
from .node_context import lock_path
from .reservation import ReservationServer
from .roles import InputMode, NodeRole

if TYPE_CHECKING:
    from pyspark import RDD

log = logging.getLogger(__name__)

EXECUTOR_WAIT = 120.0


@dataclasses.dataclass(frozen=True)
class ClusterPlan:
    """A TFCluster's arguments, validated, with the flags at ``run()``."""

    roles: List[NodeRole]
    input_mode: int
    queues: List[str]
    tensorboard: bool
    log_dir: Optional[str]
    release_port: bool
    master_node: Optional[str]
    reservation_timeout: float
    flags: FlagValues

    @property
    def spark_roles(self) -> List[NodeRole]:
        return [r for r in self.roles if not r.on_driver]


def plan_cluster(num_executors, num_ps=0, tensorboard=False, input_mode=InputMode.TENSORFLOW,
                 log_dir=None, driver_ps_nodes=False, master_node=None,
                 reservation_timeout=600, queues=("input", "output", "error"),
                 eval_node=False, release_port=True,
                 flags: Optional[FlagValues] = None) -> ClusterPlan:
    """Validate ``TFCluster.run``'s arguments; raises before anything starts."""
    roles = rolemod.plan_roles(num_executors, num_ps, master_node, eval_node, driver_ps_nodes)
    if input_mode not in (InputMode.TENSORFLOW, InputMode.SPARK):
        raise InvalidArgumentError("input_mode", input_mode,
                                   "InputMode.TENSORFLOW (0) or InputMode.SPARK (1)")
    queues = list(queues)
    if not queues or not all(isinstance(q, str) and q for q in queues):
        raise InvalidArgumentError("queues", queues, "a non-empty list of queue names")
    check.boolean("tensorboard", tensorboard)
    check.boolean("release_port", release_port)
    if log_dir is not None and not isinstance(log_dir, str):
        raise InvalidArgumentError("log_dir", log_dir, "None or a directory path")
    if tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise InvalidArgumentError("tensorboard", True,
                                   "False, or install tensorboard (pip install tensorboard)")
    return ClusterPlan(roles=roles, input_mode=input_mode, queues=queues,
                       tensorboard=tensorboard, log_dir=log_dir, release_port=release_port,
                       master_node=master_node,
                       reservation_timeout=check.seconds("reservation_timeout",
                                                         reservation_timeout),
                       flags=flags or FlagValues())


class TFCluster:
    """A TFCluster started from a ClusterPlan (see ``run``). Attributes as
    TensorFlowOnSpark had them: sc, defaultFS, working_dir, num_executors,
    nodeRDD, cluster_id, cluster_info, cluster_meta, input_mode, queues, server."""

    def __init__(self, sc, plan: ClusterPlan):
        from ..node.host import node_ip
        self.sc = sc  # or a Spark Connect session: nodes start from a DataFrame job
        self.over_connect = over_connect(sc)
        self.plan = plan
        self.num_executors = len(plan.roles)
        self.input_mode = plan.input_mode
        self.queues = plan.queues
        self.cluster_id = secrets.token_hex(4)
        self.defaultFS = default_fs(sc)
        self.working_dir = os.getcwd()
        host = node_ip() if self.over_connect else sc.getConf().get("spark.driver.host")
        self.server = ReservationServer(host, secrets.token_bytes(32), plan.roles)
        self.cluster_meta = {"id": self.cluster_id, "num_executors": self.num_executors,
                             "default_fs": self.defaultFS, "working_dir": self.working_dir,
                             "server_addr": list(self.server.address),
                             "cluster_template": _template(plan.roles)}
        self.cluster_info: Optional[List[dict]] = None
        self.nodeRDD: Optional[RDD] = None
        self.fed_rows = 0  # rows the nodes took in the last train()'s first epoch
        self._node_job: Optional[SparkJob] = None
        self._driver_nodes: List[RunningNode] = []
        self._stopped = False
        # a cluster its program lets go of without shutdown(): its server closes, so
        # its nodes (told by their dropped connection) stop too
        weakref.finalize(self, self.server.close)

    # -- starting -----------------------------------------------------------
    def node_config(self) -> TFNodeConfig:
        """What every node of this cluster is told, before it is placed."""
        plan, flags = self.plan, self.plan.flags
        return TFNodeConfig(
            cluster_id=self.cluster_id, secret=self.server.secret.hex(),
            hub_host=self.server.address[0], hub_port=self.server.address[1],
            ready_timeout=plan.reservation_timeout, input_mode=plan.input_mode,
            queues=plan.queues, master_node=plan.master_node, tensorboard=plan.tensorboard,
            log_dir=plan.log_dir, release_port=plan.release_port, default_fs=self.defaultFS,
            working_dir=self.working_dir, train_data_store=flags.train_data_store,
            serialize_data_creator=flags.serialize_data_creator,
            lock_path=lock_path(self.cluster_id))

    def start(self, map_fun, tf_args) -> "TFCluster":
        from pyspark import cloudpickle

        from ..node.host import node_ip
        from .node import launch_node
        from .node_task import first_trainer, place_node, run_node
        payload = cloudpickle.dumps((map_fun, tf_args))
        base = self.node_config()
        spark_roles = [role_dict(r) for r in self.plan.spark_roles]
        try:
            for r in self.plan.roles:
                if r.on_driver:
                    cfg = place_node(base, role_dict(r), "driver", node_ip(), os.getpid(),
                                     first_trainer(base, role_dict(r)))
                    self._driver_nodes.append(launch_node(cfg, payload, {}, "on the driver"))
            barrier = self.plan.flags.barrier_mode
            if not self.over_connect:  # TFoS's attribute; no RDD reaches a Connect client
                self.nodeRDD = self.sc.parallelize(range(len(spark_roles)), len(spark_roles))
            body = functools.partial(run_node, base, payload, spark_roles, barrier)
            self._node_job = SparkJob(self.sc, "TFCluster nodes",
                                      group=f"sparkorca-tf-{self.cluster_id}",
                                      on_end=self._wake).start(
                node_task_action(self.sc, len(spark_roles), body, barrier))
            self.cluster_info = self.server.wait_registered(
                self.plan.reservation_timeout, self._start_failure,
                lambda: self._progress(len(spark_roles)))
            for node in self._driver_nodes:
                node.wait_ready()
        except BaseException:
            for link in self.server.nodes.values():
                if link.info is not None:
                    self.server.send_to(link, {"type": "abort", "why": "the reservation failed"})
            self._stop_nodes()
            raise
        return self

    def _wake(self) -> None:
        with self.server.cond:
            self.server.cond.notify_all()

    def _start_failure(self) -> Optional[str]:
        why = self._node_job.failure() if self._node_job is not None else None
        if why:
            return why
        for node in self._driver_nodes:
            if node.proc.poll() is not None:
                return f"{node.what} exited with code {node.proc.returncode}"
        return None

    def _progress(self, n_tasks: int) -> str:
        """Why nodes may be missing, from what the driver knows for sure (the status
        tracker's task counts lag when the UI is off)."""
        registered = sum(1 for n in self.server.nodes.values() if n.info is not None)
        if self.over_connect:
            size = "the Spark Connect server's application may have fewer task slots"
        else:
            executors = max(0, len(self.sc.statusTracker().getExecutorInfos()) - 1)
            size = (f"the application has {executors} executor(s) besides the driver and "
                    f"{self.sc.defaultParallelism} task slot(s)")
        return (f"{registered} of the {n_tasks} node task(s) Spark was asked to run have "
                f"started; {size}. A node's task waits while no "
                "slot is free: each node holds one for as long as the cluster runs (ps nodes "
                "and InputMode.TENSORFLOW nodes), and other jobs may hold the rest. A task "
                "that failed is reported by Spark with its executor's log.")

    # -- helpers ------------------------------------------------------------
    def _fed_nums(self) -> List[int]:
        return [r.worker_num for r in self.plan.roles if r.fed]

    def _held_nums(self) -> List[int]:
        return [r.worker_num for r in self.plan.roles if not r.fed]

    def _check_nodes(self) -> None:
        failures = self.server.failures()
        if failures:
            raise OrcaRuntimeError("TFCluster: " + "\n\n".join(failures))

    def _nodes_failed(self) -> Optional[str]:
        return "nodes" if self.server.failures() else None

    def _feed_cfg(self, qname: str, feed_timeout: float, epochs: int) -> dict:
        assert self.cluster_info is not None
        nodes = [dict(n) for n in self.cluster_info if n["socket"]]
        return {"nodes": nodes, "secret": self.server.secret.hex(), "qname": qname,
                "feed_timeout": feed_timeout, "epochs": epochs,
                "feed_id": secrets.token_hex(6)}

    def _check_feed_args(self, qname, feed_timeout) -> float:
        if self._stopped:
            raise OrcaRuntimeError("this TFCluster has been shut down")
        if self.input_mode != InputMode.SPARK:
            raise OrcaRuntimeError("train() and inference() feed InputMode.SPARK clusters; "
                                   "this one runs InputMode.TENSORFLOW (its nodes read "
                                   "their own data)")
        if qname not in self.queues:
            raise InvalidArgumentError("qname", qname, f"one of the cluster's queues {self.queues}")
        return check.seconds("feed_timeout", feed_timeout)

    def _run_job(self, action: Callable, description: str):
        """Run a Spark job; fail at once if a node fails or is lost meanwhile."""
        job = SparkJob(self.sc, description, on_end=self._wake).start(action)
        if self.server.wait(lambda: job.done, None, self._nodes_failed) == "nodes":
            job.cancel()
            self._check_nodes()
        job.join()
        # a node's own failure explains a failed feed best, and a feed that ended
        # while a node failed (a reply raced its failure) did not succeed
        self._check_nodes()
        if job.error is not None:
            raise OrcaRuntimeError(f"TFCluster {job.failure()}") from None
        return job.result

    # -- feeding ------------------------------------------------------------
    def train(self, dataRDD, num_epochs: int = 1, feed_timeout: float = 600, qname: str = "input"):
        """Feed ``dataRDD`` (an RDD, a DataFrame, or sparkorca.data Shards) to the
        worker nodes, ``num_epochs`` times. Epochs after the first are replayed by
        each node from ``OrcaContext.train_data_store``, not re-read by Spark."""
        if num_epochs == 0 and not isinstance(num_epochs, bool):
            raise InvalidArgumentError("num_epochs", 0, "an integer >= 1",
                                       hint="TensorFlowOnSpark read 0 as 10 epochs; say how many")
        num_epochs = check.integer("num_epochs", num_epochs)
        feed_timeout = self._check_feed_args(qname, feed_timeout)
        self._check_nodes()
        cfg = self._feed_cfg(qname, feed_timeout, num_epochs)
        action = _train_action(dataRDD, cfg)
        rows = self._run_job(action, f"train(): feed {type(dataRDD).__name__} to the nodes")
        fed = self._fed_nums()
        if num_epochs > 1:
            self._replay(fed, cfg, num_epochs - 1, marks=False)
        self.server.send(fed, {"type": "flush", "qname": qname})
        self.fed_rows = sum(rows or [])
        log.info("TFCluster train(): %d rows fed (first epoch)", self.fed_rows)

    def feed_stored(self, data, num_epochs: int, feed_timeout: float, qname: str) -> int:
        """Store ``data`` on the nodes first (each its own executor's partitions, in
        ``OrcaContext.train_data_store``), then feed it from there ``num_epochs``
        times, every epoch ending with a partial or empty batch; rows stored.

        What the Estimators' workers need: a worker waiting for data it can only
        get once the others have taken theirs would deadlock a synchronous
        (all-reduce) step; from the store every worker's epoch ends on its own.
        """
        feed_timeout = self._check_feed_args(qname, feed_timeout)
        self._check_nodes()
        cfg = dict(self._feed_cfg(qname, feed_timeout, num_epochs), store_only=True)
        rows = self._run_job(_train_action(data, cfg),
                             f"store {type(data).__name__} on the nodes")
        self._replay(self._fed_nums(), cfg, num_epochs, marks=True)
        return sum(rows or [])

    def _replay(self, fed: List[int], cfg: dict, epochs: int, marks: bool) -> None:
        """Have the nodes feed their stored epoch ``epochs`` times; returns once
        every node's consumer has taken it all."""
        feed_id = cfg["feed_id"]
        self.server.send(fed, {"type": "replay", "qname": cfg["qname"], "feed_id": feed_id,
                               "epochs": epochs, "feed_timeout": cfg["feed_timeout"],
                               "marks": marks})
        links = [self.server.node(k) for k in fed]
        self.server.wait(lambda: all(feed_id in n.replies or n.state != NodeState.RUNNING
                                     for n in links), None, self._nodes_failed)
        self._check_nodes()  # a node that failed counts as finished in the wait
        errors = [n.replies[feed_id]["error"] for n in links
                  if feed_id in n.replies and n.replies[feed_id]["error"]]
        if errors:
            raise OrcaRuntimeError("TFCluster train(): " + "; ".join(errors))

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
        grace_secs = check.seconds("grace_secs", grace_secs, allow_zero=True)
        timeout = check.seconds("timeout", timeout, allow_forever=True)
        timed_out = None
        try:
            fed = self._fed_nums()
            if self.input_mode == InputMode.SPARK:
                self.server.send(fed, {"type": "end"})
            workers = [self.server.node(k) for k in fed]
            # a fed worker that failed stays up until stopped (its feeders get its
            # traceback): its peers may wait on it in a collective, so stop waiting
            def worker_failed():
                return "nodes" if any(n.state == NodeState.ERROR for n in workers) else None
            why = self.server.wait(lambda: all(n.state in FINAL for n in workers),
                                   None if timeout == -1 else timeout, worker_failed)
            if why == "timeout":
                timed_out = [n.describe() for n in workers if n.state not in FINAL]
            elif why is None and grace_secs:
                held = [self.server.node(k) for k in self._held_nums()]
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
        stuck = self.server.stop_nodes(list(self.server.nodes), 30)
        if stuck:
            log.warning("TFCluster nodes %s did not stop within 30s; cancelling their Spark "
                        "job", ", ".join(link.describe() for link in stuck))
        if self._node_job is not None:
            # its tasks end with their nodes; one still waiting for a slot never would
            if stuck or not self._node_job.join(10):
                self._node_job.cancel(30)
        for node in self._driver_nodes:
            node.stop()
        self.server.close()

    def tensorboard_url(self) -> Optional[str]:
        for node in self.cluster_info or []:
            if node.get("tb_port"):
                return f"http://{node['host']}:{node['tb_port']}{node['tb_path']}/"
        return None


def default_fs(sc) -> str:
    """The application's ``fs.defaultFS`` as TFoS gave it to ctx ("file://", not
    "file:///")."""
    if over_connect(sc):  # the server's Hadoop configuration, as far as its conf tells
        fs = sc.conf.get("spark.hadoop.fs.defaultFS", None) or "file:///"
    else:
        fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    return fs[:-1] if fs.startswith("file://") and fs.endswith("/") else fs


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
    if hasattr(data, "to_arrow_rdd"):  # sparkorca.data.Shards, the Estimators' inputs
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
        if over_connect(data):
            raise InvalidArgumentError(
                "dataRDD", "a Spark Connect DataFrame", "a DataFrame of a SparkContext: "
                "inference() returns an RDD, which Spark Connect does not have",
                hint="over Spark Connect, call the model from a mapInArrow/mapInPandas UDF "
                     "(sparkorca.ray.connect() joins Ray there)")

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
    from .. import context
    from ..spark.session import wait_for_executors
    plan = plan_cluster(num_executors, num_ps, tensorboard, input_mode, log_dir,
                        driver_ps_nodes, master_node, reservation_timeout, queues, eval_node,
                        release_port, flags=context.flags())
    if not callable(map_fun):
        raise InvalidArgumentError("map_fun", map_fun, "a function map_fun(args, ctx)")
    n_spark = len(plan.spark_roles)
    if not over_connect(sc):  # a Connect client sees no executors: the barrier stage waits
        wait_for_executors(sc, n_spark, EXECUTOR_WAIT,
                           f"starting {n_spark} TFCluster node(s) on them")
        _check_slots(sc, n_spark)
    cluster = TFCluster(sc, plan).start(map_fun, tf_args)
    context.on_stop(cluster._stop_nodes, sc=sc)  # a cluster its program did not shut down
    tb = cluster.tensorboard_url()
    if tb:
        log.info("TensorBoard of TFCluster %s: %s", cluster.cluster_id, tb)
    return cluster


def task_slots(sc) -> Optional[int]:
    """Tasks the application runs at once; None when dynamic allocation may grow it."""
    conf = sc.getConf()
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return None
    return sc.defaultParallelism // max(1, int(conf.get("spark.task.cpus", "1")))


def _check_slots(sc, needed: int, why: str = "every node started by Spark holds one",
                 hint: str = "start the context with more executors or cores, or use "
                             "driver_ps_nodes") -> None:
    """Each Spark-run node needs a task slot for as long as it runs: refuse a cluster
    larger than the application (unless dynamic allocation may grow it)."""
    slots = task_slots(sc)
    if slots is not None and needed > slots:
        raise InvalidArgumentError(
            "num_executors", needed, f"at most {slots}: the Spark application has {slots} "
            f"task slot(s) and {why}", hint=hint)


def role_dict(role: NodeRole) -> dict:
    return {"worker_num": role.worker_num, "job_name": role.job_name,
            "task_index": role.task_index}


def _template(roles) -> dict:
    template: dict = {}
    for r in roles:
        template.setdefault(r.job_name, []).append(r.worker_num)
    return template

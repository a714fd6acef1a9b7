"""RayOnSpark: a Ray cluster inside the Spark application.

The head runs on the driver, started before Spark so the two come up
concurrently; one raylet per executor is started from a Spark job (a barrier
stage by default) and then outlives its task, supervised by a node_runner that
watches the executor JVM and keeps a control connection to the driver's hub. On a
local master the head is the only node and carries the executor's CPUs, as
``ray.init()`` would. A fresh token authenticates every connection; it travels in
process environments and launch configs, never in Spark conf or on a command line.

Nothing listens unauthenticated: no autoscaler monitor, no metrics exporters, no
Ray Client server (see ``ray_start``), no dashboard unless ``include_webui=True``;
the ports Ray would take at fixed numbers are chosen by the kernel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import sys
import threading
import time
from typing import Dict, List, Optional

from .._wait import wait_for
from ..config import ContextSpec
from ..errors import OrcaRuntimeError, StartupTimeoutError
from ..node.host import node_ip
from ..node.hub import NodeHub, NodeLink, NodeState
from ..node.job import SparkJob, node_task_action, over_connect
from ..node.launch import RunningNode
from .node import CLUSTER_ENV, RayNodeConfig, launch_ray_node
from .node_runner import log_tails
from .raylet_task import node_temp_dir, start_raylet
from .sizing import RayPlan

log = logging.getLogger(__name__)

START_TIMEOUT = float(os.environ.get("SPARKORCA_RAY_START_TIMEOUT", "120"))
# Set in Spark Python workers (via SparkContext.environment, sent inside tasks) so
# that sparkorca.ray.connect() finds the cluster from a Spark task.
ADDRESS_ENV = "SPARKORCA_RAY_ADDRESS"
HEAL_INTERVAL = 2.0  # seconds between checks for executors without a raylet
RAYLET_STOP_TIMEOUT = 30.0
HEAD = "head"


def auth_env(token: str) -> dict:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def quiet_env() -> Dict[str, str]:
    """Environment that keeps Ray's unauthenticated Prometheus endpoints closed: the
    agents' metrics exporters, and the dashboard head's metrics server (which Ray
    starts even with the dashboard off, on fixed port 44227; -1 makes it give up)."""
    return {"RAY_enable_metrics_collection": "0", "DASHBOARD_METRIC_PORT": "-1",
            "RAY_USAGE_STATS_ENABLED": "0"}


def refresh_ray_auth() -> None:
    """Make an already-imported Ray re-read RAY_AUTH_* (a second context, new token)."""
    try:
        from ray._raylet import (  # type: ignore[attr-defined]
            AuthenticationTokenLoader,
            Config,
        )
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # older Ray without token auth
        pass


def gcs_serving(address: str, timeout: float = 2.0) -> bool:
    """Whether the GCS at ``address`` answers gRPC's health check (which needs no
    token), within ``timeout`` seconds. ``ray.init`` would retry a dead GCS for
    about 14 minutes; this asks once."""
    import grpc
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda x: x,
                                    response_deserializer=lambda b: b)
        try:
            return check(b"", timeout=timeout) == b"\x08\x01"  # status: SERVING
        except grpc.RpcError:
            return False


class RayOnSpark:
    """Start with ``start_head()`` then ``attach(sc)``; undo with ``stop()``.

    ``hub_host`` is the address the driver's control server binds (the Spark
    driver's address: executors reach it there).
    """

    def __init__(self, spec: ContextSpec, plan: RayPlan, hub_host: str):
        self.spec = spec
        self.plan = plan
        self.hub_host = hub_host
        self.cluster_id = secrets.token_hex(4)
        self.token = secrets.token_hex(32)
        self.host = node_ip()
        self.node_prefix = f"sparkorca-{self.cluster_id}"
        self.env = {**auth_env(self.token), **quiet_env(), CLUSTER_ENV: self.cluster_id,
                    **spec.env}
        self.gcs_address: Optional[str] = None
        self.webui_url: Optional[str] = None
        self.ray_info: Optional[dict] = None
        self.hub: Optional[NodeHub] = None
        self.head: Optional[RunningNode] = None
        self._secret = secrets.token_bytes(32)
        self._sc = None
        self._over_connect = False  # attached through a Spark Connect session
        self._head_ready = threading.Event()
        self._head_error: Optional[BaseException] = None
        self._jobs: List[SparkJob] = []
        self._raylets_stopping: List[NodeLink] = []
        self._healer: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._env_restore = contextlib.ExitStack()

    @property
    def _hub(self) -> NodeHub:
        assert self.hub is not None, "the node hub starts first"
        return self.hub

    @property
    def _head(self) -> RunningNode:
        assert self.head is not None, "the head starts first"
        return self.head

    # -- configuration --------------------------------------------------------
    def _options(self, **options) -> dict:
        """``ray start`` options every node gets, then ``options``, then extra_params."""
        common = {"disable_usage_stats": True, "dashboard_agent_listen_port": 0,
                  # core workers bind kernel-chosen ports, not Ray's shared 10002-19999 pool
                  "min_worker_port": 0, "max_worker_port": 0}
        return {**common, **options, **self.spec.extra_params}

    def _config(self, env: Optional[dict] = None, **fields) -> RayNodeConfig:
        return RayNodeConfig(cluster_id=self.cluster_id, secret=self._secret.hex(),
                             hub_host=self._hub.address[0], hub_port=self._hub.address[1],
                             env=env or self.env, **fields)

    def raylet_config(self) -> RayNodeConfig:
        """The raylets' config before a Spark task places it on its executor."""
        options = self._options(address=self.gcs_address, num_cpus=self.plan.node_cpus,
                                object_store_memory=self.plan.node_object_store,
                                node_name=self.node_prefix)
        # Ray starts an idle worker per CPU when the first driver joins a raylet. On
        # an executor's raylet that driver is a Spark task (connect() in a UDF, or
        # to_ray's where its holder's socket is out of reach), and to_ray's submit no
        # Ray tasks: the workers would start while Spark needs the CPUs, for nothing.
        # Tasks get workers on demand, as always.
        env = {**self.env, "RAY_prestart_worker_first_driver": "0"}
        return self._config(env=env, options=options,
                            ready_timeout=max(10.0, START_TIMEOUT - 15),
                            advertise=self._over_connect)

    # -- head -------------------------------------------------------------
    def start_head(self) -> None:
        """Launch the head's runner; returns at once (call from a long-lived thread).
        The head comes up while the Spark driver JVM starts."""
        self.hub = NodeHub(self.hub_host, self._secret, accept_new=True,
                           name="sparkorca-ray-hub")
        self.hub.on_register = self._registered
        local = self.plan.local
        options = self._options(
            head=True, port=0, node_ip_address=self.host, no_monitor=True,
            # on a local master the head is the executor's node too
            num_cpus=self.plan.node_cpus if local else 0, num_gpus=0,
            object_store_memory=self.plan.node_object_store if local
            else self.plan.head_object_store,
            include_dashboard="true" if self.plan.include_webui else "false",
            node_name=f"{self.node_prefix}-{HEAD}")
        if self.plan.include_webui:
            options.update(dashboard_host=self.host, dashboard_port=0)
        if self.spec.system_config:
            import json
            options["system_config"] = json.dumps(self.spec.system_config)
        config = self._config(options=options, head=True, stop_grace=0,
                              ready_timeout=START_TIMEOUT).placed(
            name=HEAD, executor_id="driver" if local else "", host=self.host,
            owner_pid=os.getpid(),
            temp_dir=node_temp_dir(self.cluster_id, "driver" if local else HEAD))
        self.head = launch_ray_node(config, f"the Ray head on the driver ({self.host})")
        threading.Thread(target=self._wait_head, name="sparkorca-ray-head", daemon=True).start()

    def _wait_head(self) -> None:
        try:
            self.gcs_address = self._head.wait_ready()["gcs_address"]
        except BaseException as e:
            self._head_error = e
        finally:
            self._head_ready.set()

    def _registered(self, link: NodeLink) -> None:
        log.debug("Ray node %s registered: %s", link.key, link.info)

    # -- raylets ----------------------------------------------------------
    def attach(self, sc) -> None:
        """Start the raylets on ``sc``'s executors and connect this driver.

        ``sc`` may be a Spark Connect session: the raylets then start from a barrier
        ``mapInArrow`` job, the barrier stage itself waits for the executors (no
        executor list reaches a client), and there is no healer (same reason)."""
        self._sc = sc
        self._over_connect = connect = over_connect(sc)
        if not self._head_ready.wait(START_TIMEOUT + 15):
            raise StartupTimeoutError(f"timed out after {START_TIMEOUT + 15:g}s waiting for "
                                      "the Ray head to start")
        if self._head_error is not None:
            raise self._head_error
        if not self.plan.local:
            if not connect:
                from ..spark.session import wait_for_executors
                wait_for_executors(sc, self.plan.num_ray_nodes, START_TIMEOUT,
                                   "starting raylets on them")
            self._launch_raylets(self.plan.num_ray_nodes, self.plan.barrier)
        self._connect_driver()
        self._wait_for_nodes()
        if connect:
            return
        sc.environment.update({ADDRESS_ENV: self.gcs_address, CLUSTER_ENV: self.cluster_id,
                               **auth_env(self.token)})
        if not self.plan.local:
            self._healer = threading.Thread(target=self._heal, name="sparkorca-ray-healer",
                                            daemon=True)
            self._healer.start()

    def _launch_raylets(self, tasks: int, barrier: bool) -> SparkJob:
        sc = self._sc
        body = functools.partial(start_raylet, self.raylet_config(), barrier)
        job = SparkJob(sc, "start one raylet per executor", on_end=self._notify).start(
            node_task_action(sc, tasks, body, barrier))
        self._jobs.append(job)
        return job

    def _notify(self) -> None:
        with self._hub.cond:
            self._hub.cond.notify_all()

    def _connect_driver(self) -> None:
        """Join the cluster, never waiting past START_TIMEOUT: ``ray.init`` itself
        would retry an unreachable GCS for many minutes."""
        import ray

        from .._environ import temporary_environ
        deadline = time.monotonic() + START_TIMEOUT
        gcs_address, head = self.gcs_address, self._head
        assert gcs_address is not None
        wait_for(lambda: gcs_serving(gcs_address), START_TIMEOUT,
                 f"the Ray GCS at {gcs_address} to answer", tail=self._head_tails,
                 failed=head.exit_report)
        # the driver's core worker reads its config from the environment: the token,
        # and no metrics exporter connection to the agent
        self._env_restore.enter_context(temporary_environ({**auth_env(self.token),
                                                           **quiet_env()}))
        refresh_ray_auth()
        box: dict = {}

        def init():
            try:
                # The head's temp dir pins this driver to the head node, even where
                # the raylets share its IP (local and local-cluster masters).
                box["ctx"] = ray.init(address=gcs_address, _temp_dir=head.temp_dir,
                                      namespace=f"sparkorca-{self.cluster_id}")
            except BaseException as e:
                box["error"] = e
        connecting = threading.Thread(target=init, name="sparkorca-ray-connect", daemon=True)
        connecting.start()
        connecting.join(max(1.0, deadline - time.monotonic()))
        if connecting.is_alive():
            raise StartupTimeoutError(
                f"timed out after {START_TIMEOUT:g}s connecting the driver to the Ray GCS at "
                f"{self.gcs_address}\n--- last output ---\n"
                f"{head.exit_report() or self._head_tails()}")
        if "error" in box:
            raise box["error"]
        ctx = box["ctx"]
        self.ray_info = dict(ctx.address_info)
        if self.plan.include_webui and ctx.dashboard_url:
            self.webui_url = f"http://{ctx.dashboard_url}"

    def _head_tails(self) -> str:
        head = self._head
        return log_tails(head.temp_dir, os.path.join(head.temp_dir, "ray-start.log"))

    def _raylet_links(self) -> List[NodeLink]:
        with self._hub.cond:  # the hub's accept threads add nodes meanwhile
            return [link for key, link in self._hub.nodes.items() if key != HEAD]

    def _raylet_infos(self, state: Optional[NodeState] = None) -> List[dict]:
        """What each raylet registered with (those in ``state``, if given)."""
        return [dict(link.info) for link in self._raylet_links()
                if link.info is not None and state in (None, link.state)]

    def _wait_for_nodes(self) -> None:
        n = self.plan.num_ray_nodes if not self.plan.local else 0
        job = self._jobs[-1] if self._jobs else None

        released = False

        def registered() -> set:
            return {info["node_name"] for info in self._raylet_infos(NodeState.RUNNING)}

        def all_up():
            nonlocal released
            if not released:
                names = registered()
                if len(names) < n or not names <= self._alive_names():
                    return False
                # a barrier start's raylets outlive their tasks only from now on
                self._hub.send([link.key for link in self._raylet_links()],
                               {"type": "release"})
                released = True
            if job is not None and (job.running or job.failure()):
                return False  # its tasks end as they detach; a failure is failed()'s
            names = registered()  # a raylet may have died between release and detach
            return len(names) >= n and names <= self._alive_names()

        def failed():
            why = (job.failure() if job is not None else None) or self._head.exit_report()
            return why or ("\n".join(self._hub.failures()) or None)

        def progress():
            return (f"raylets registered with the driver: {sorted(registered()) or 'none'} "
                    f"of {n}; the raylet job is "
                    f"{'still running' if job is not None and job.running else 'not running'}")

        try:
            wait_for(all_up, START_TIMEOUT,
                     f"{n} raylet(s), one per Spark executor, to register with the GCS",
                     tail=progress, failed=failed)
        except (OrcaRuntimeError, StartupTimeoutError):
            if job is not None:
                job.cancel()
            raise

    def _alive_names(self) -> set:
        import ray
        return {n["NodeName"] for n in ray.nodes() if n["Alive"]}

    # -- healing ----------------------------------------------------------
    def _heal(self) -> None:
        """Give a raylet to executors that have none (a replacement for a lost
        executor, or one added by dynamic allocation), up to num_ray_nodes."""
        while not self._stopping.wait(HEAL_INTERVAL):
            try:
                if any(job.running for job in self._jobs):
                    continue
                executors = _executor_ids(self._sc)
                served = {info["executor_id"]
                          for info in self._raylet_infos(NodeState.RUNNING)}
                missing = [e for e in executors if e not in served]
                if missing and len(served) < self.plan.num_ray_nodes:
                    log.info("starting raylets for Spark executor(s) %s", ", ".join(missing))
                    slots = max(1, len(executors) * self.plan.node_cpus)
                    self._launch_raylets(slots, barrier=False)
            except Exception as e:  # the SparkContext is stopping: nothing left to heal
                if not self._stopping.is_set():
                    log.debug("raylet healer: %r", e)

    # -- queries ----------------------------------------------------------
    @property
    def raylets(self) -> List[dict]:
        """What each raylet registered with: executor id and pid, host, runner pid,
        node name, temp dir."""
        return self._raylet_infos()

    def nodes(self) -> List[dict]:
        """Every node of this cluster as the GCS sees it, with its Spark executor."""
        import ray
        with self._hub.cond:  # the healer may register a node meanwhile
            links = list(self._hub.nodes.values())
        by_name = {link.info["node_name"]: link.info for link in links if link.info}
        out = []
        for n in ray.nodes():
            name = n.get("NodeName", "")
            if not name.startswith(self.node_prefix):
                continue
            info = by_name.get(name, {})
            out.append({"node_id": n["NodeID"], "node_name": name, "alive": n["Alive"],
                        "is_head": name.endswith(f"-{HEAD}"),
                        "executor_id": info.get("executor_id") or None,
                        "host": n["NodeManagerAddress"],
                        "resources": n.get("Resources", {})})
        return out

    # -- stop -------------------------------------------------------------
    def stop_raylets(self, wait: bool = True) -> None:
        """Disconnect the driver, then stop the raylets. Safe on a partial start.

        The driver leaves first, so the end of its actors and tasks is Ray's orderly
        job cleanup, not workers dying under a connected driver. ``wait=False``
        only tells the raylets to stop: the context's stop lets Spark stop
        meanwhile, and ``stop_head`` waits for them."""
        self._stopping.set()
        if self._healer is not None:
            self._healer.join(30)
        ray = sys.modules.get("ray")
        try:
            if ray is not None and ray.is_initialized():
                ray.shutdown()
        finally:
            if self._sc is not None and not self._over_connect:
                for key in (ADDRESS_ENV, CLUSTER_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
                    self._sc.environment.pop(key, None)
            if self.hub is not None:
                self._raylets_stopping = self.hub.tell_to_stop(
                    [link.key for link in self._raylet_links()])
            for job in self._jobs:
                job.cancel()
            self._env_restore.close()
            if wait:
                self._wait_raylets_stopped()

    def _wait_raylets_stopped(self) -> None:
        links, self._raylets_stopping = self._raylets_stopping, []
        if self.hub is None or not links:
            return
        stuck = self.hub.wait_stopped(links, RAYLET_STOP_TIMEOUT)
        if stuck:
            log.warning("raylets %s did not stop within %gs; their runners end them when "
                        "their executors exit",
                        ", ".join(link.describe() for link in stuck), RAYLET_STOP_TIMEOUT)

    def stop_head(self) -> None:
        """Stop the head and the driver's hub (after the raylets)."""
        self._head_ready.wait(START_TIMEOUT + 15)
        self._wait_raylets_stopped()
        if self.head is not None:
            self.head.stop()
            self.head = None
        if self.hub is not None:
            self.hub.close()

    def stop(self) -> None:
        """Stop the whole Ray cluster; Spark keeps running. Idempotent."""
        self.stop_raylets()
        self.stop_head()


def _executor_ids(sc) -> List[str]:
    """The executors registered with the driver right now (not the driver)."""
    ids = sc._jsc.sc().getExecutorIds()
    return [str(ids.apply(i)) for i in range(ids.size())]

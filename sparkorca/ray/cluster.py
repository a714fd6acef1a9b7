"""RayOnSpark: a Ray cluster inside the Spark application.

The head runs on the driver (0 CPUs), started before Spark so the two come up
concurrently; one raylet per executor is started from a Spark job (a barrier
stage by default) and then outlives its task, supervised by a node_runner that
watches the executor JVM. Readiness is the raylets' registration with the GCS.
A fresh token authenticates every connection; it travels in process
environments and pickled task closures, never in Spark conf or on a command line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import threading
from typing import List, Optional

from .._wait import wait_for
from ..config import ContextSpec, node_ip
from ..errors import OrcaRuntimeError, StartupTimeoutError
from .._process import RunningNode, wait_ready
from .launch import free_ports, node_temp_dir, start_node
from .node_runner import RUNNER_PID_ENV
from .sizing import RayPlan

log = logging.getLogger(__name__)

START_TIMEOUT = float(os.environ.get("SPARKORCA_RAY_START_TIMEOUT", "120"))
# Set in Spark Python workers (via SparkContext.environment, sent inside tasks) so
# that sparkorca.ray.connect() finds the cluster from a Spark task.
ADDRESS_ENV = "SPARKORCA_RAY_ADDRESS"
CLUSTER_ENV = "SPARKORCA_RAY_CLUSTER"


def auth_env(token: str) -> dict:
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


def refresh_ray_auth() -> None:
    """Make an already-imported Ray re-read RAY_AUTH_* (a second context, new token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):  # older Ray without token auth
        pass


def _job_failure(error: BaseException) -> str:
    """The useful part of a failed Spark job: our own error raised in the task."""
    text = str(error)
    for marker in ("OrcaRuntimeError: ", "StartupTimeoutError: "):
        if marker in text:
            body = text[text.index(marker) + len(marker):]
            return body.split("\n\tat ")[0].split("\n\n")[0].strip()[:6000]
    return text.strip()[-3000:]


class RayOnSpark:
    """Start with ``start_head()`` then ``attach(sc)``; undo with ``stop()``."""

    def __init__(self, spec: ContextSpec, plan: RayPlan):
        self.spec = spec
        self.plan = plan
        self.cluster_id = secrets.token_hex(4)
        self.token = secrets.token_hex(32)
        self.host = node_ip()
        self.node_prefix = f"sparkorca-{self.cluster_id}"
        self.env = {**auth_env(self.token), "RAY_USAGE_STATS_ENABLED": "0",
                    CLUSTER_ENV: self.cluster_id, **spec.env}
        self.gcs_address: Optional[str] = None
        self.webui_url: Optional[str] = None
        self.head: Optional[RunningNode] = None
        self.raylets: List[dict] = []
        self.ray_info: Optional[dict] = None
        self._sc = None
        self._job_group = f"sparkorca-raylets-{self.cluster_id}"
        self._job_thread: Optional[threading.Thread] = None
        self._job_error: Optional[BaseException] = None
        self._nodes_thread: Optional[threading.Thread] = None
        self._driver_nodes_error: Optional[BaseException] = None
        self.local_raylet: Optional[RunningNode] = None
        self._env_restore = contextlib.ExitStack()

    # -- head -------------------------------------------------------------
    def start_head(self) -> None:
        """Launch the head's runner; returns at once (call from a long-lived thread)."""
        port, agent_port, client_port, dash_port = free_ports(4)
        self.gcs_address = f"{self.host}:{port}"
        options = {
            "head": True, "port": port, "node_ip_address": self.host,
            "num_cpus": 0, "num_gpus": 0, "object_store_memory": self.plan.head_object_store,
            "include_dashboard": "true" if self.plan.include_webui else "false",
            "dashboard_agent_listen_port": agent_port,
            "ray_client_server_port": client_port,
            "node_name": f"{self.node_prefix}-head", "disable_usage_stats": True,
        }
        if self.plan.include_webui:
            options.update(dashboard_host=self.host, dashboard_port=dash_port)
            self.webui_url = f"http://{self.host}:{dash_port}"
        if self.spec.system_config:
            options["system_config"] = json.dumps(self.spec.system_config)
        options.update(self.spec.extra_params)
        self.head = start_node(options, self.env, owner_pid=os.getpid(),
                               ready_timeout=START_TIMEOUT,
                               what=f"the Ray head on the driver ({self.gcs_address})",
                               temp_dir=node_temp_dir(self.cluster_id, "head"), stop_grace=0)
        if self.plan.local:
            # The one executor of a local master is the driver JVM: its raylet needs
            # no Spark task, and `ray start` waits for the GCS, so both start now.
            from .raylet_task import raylet_options, raylet_record
            options = raylet_options(self._raylet_cfg(), self.host, "driver", 0)
            self.local_raylet = start_node(
                options, self.env, owner_pid=os.getpid(), ready_timeout=START_TIMEOUT,
                what="the raylet of the local Spark executor (the driver)",
                temp_dir=node_temp_dir(self.cluster_id, "driver"))
            self.raylets = [raylet_record(0, "driver", self.host, None, self.local_raylet,
                                          options)]
        self._nodes_thread = threading.Thread(target=self._wait_driver_nodes,
                                              name="sparkorca-ray-head", daemon=True)
        self._nodes_thread.start()

    def _wait_driver_nodes(self) -> None:
        """Wait (beside the Spark start) for the nodes started on the driver."""
        try:
            wait_ready(self.head)
            if self.local_raylet is not None:
                wait_ready(self.local_raylet)
        except BaseException as e:
            self._driver_nodes_error = e

    def _raylet_cfg(self) -> dict:
        return {
            "barrier": self.plan.barrier, "gcs_address": self.gcs_address,
            "cluster_id": self.cluster_id, "node_prefix": self.node_prefix,
            "num_cpus": self.plan.node_cpus, "object_store_memory": self.plan.node_object_store,
            "env": self.env, "extra_params": self.spec.extra_params,
            "ready_timeout": max(10.0, START_TIMEOUT - 15),
        }

    # -- raylets ----------------------------------------------------------
    def attach(self, sc) -> None:
        """Start the raylets on ``sc``'s executors and connect this driver."""
        self._sc = sc
        self._nodes_thread.join()
        if self._driver_nodes_error is not None:
            raise self._driver_nodes_error
        if not self.plan.local:
            from ..spark.session import wait_for_executors
            wait_for_executors(sc, self.plan.num_ray_nodes, START_TIMEOUT,
                               "starting raylets on them")
            self._launch_raylets(sc)
        self._connect_driver()
        self._wait_for_nodes()
        sc.environment.update({ADDRESS_ENV: self.gcs_address, CLUSTER_ENV: self.cluster_id,
                               **auth_env(self.token)})

    def _launch_raylets(self, sc) -> None:
        from .raylet_task import start_raylet
        cfg = self._raylet_cfg()
        n = self.plan.num_ray_nodes

        def run():
            try:
                sc.setJobGroup(self._job_group, "sparkorca: start one raylet per executor",
                               interruptOnCancel=True)
                rdd = sc.parallelize(range(n), n)
                if self.plan.barrier:
                    rdd = rdd.barrier()
                self.raylets = rdd.mapPartitionsWithIndex(
                    functools.partial(start_raylet, cfg)).collect()
            except BaseException as e:  # reported by _wait_for_nodes
                self._job_error = e

        self._job_thread = threading.Thread(target=run, name="sparkorca-raylets", daemon=True)
        self._job_thread.start()

    def _connect_driver(self) -> None:
        import ray
        from ..spark.session import temporary_environ
        self._env_restore.enter_context(temporary_environ(auth_env(self.token)))
        refresh_ray_auth()
        # The head's temp dir pins this driver to the head node, even where the
        # raylets share its IP (local and local-cluster masters).
        ctx = ray.init(address=self.gcs_address, _temp_dir=self.head.temp_dir,
                       namespace=f"sparkorca-{self.cluster_id}")
        self.ray_info = dict(ctx.address_info)

    def _alive_names(self) -> set:
        import ray
        return {n["NodeName"] for n in ray.nodes() if n["Alive"]}

    def _wait_for_nodes(self) -> None:
        n = self.plan.num_ray_nodes

        def all_registered():
            if self._job_running() or self._job_error is not None:
                return False
            names = {r["node_name"] for r in self.raylets}
            return len(names) == n and names <= self._alive_names()

        def failed():
            if self._job_error is not None:
                return f"starting the raylets failed: {_job_failure(self._job_error)}"
            return None

        def progress():
            registered = sorted(x for x in self._alive_names() if "-executor-" in x)
            return (f"raylets registered with the GCS at {self.gcs_address}: "
                    f"{registered or 'none'} of {n}; the raylet job is "
                    f"{'still running' if self._job_running() else 'not running'}")

        try:
            wait_for(all_registered, START_TIMEOUT,
                     f"{n} raylet(s), one per Spark executor, to register with the GCS",
                     tail=progress, failed=failed)
        except (OrcaRuntimeError, StartupTimeoutError):
            self._cancel_job()
            raise

    def _job_running(self) -> bool:
        return self._job_thread is not None and self._job_thread.is_alive()

    # -- queries ----------------------------------------------------------
    def nodes(self) -> List[dict]:
        """Every node of this cluster as the GCS sees it, with its Spark executor."""
        import ray
        by_name = {r["node_name"]: r for r in self.raylets}
        out = []
        for n in ray.nodes():
            name = n.get("NodeName", "")
            if not name.startswith(self.node_prefix):
                continue
            raylet = by_name.get(name, {})
            out.append({"node_id": n["NodeID"], "node_name": name, "alive": n["Alive"],
                        "is_head": name.endswith("-head"),
                        "executor_id": raylet.get("executor_id"),
                        "host": n["NodeManagerAddress"],
                        "resources": n.get("Resources", {})})
        return out

    # -- stop -------------------------------------------------------------
    def _cancel_job(self) -> None:
        if self._sc is not None and self._job_running():
            with contextlib.suppress(Exception):
                self._sc.cancelJobGroup(self._job_group)
            self._job_thread.join(60)

    def _stop_raylets(self) -> None:
        """Ask each raylet's runner (through Ray itself) to stop its node; wait."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        targets = [n for n in self.nodes() if n["alive"] and not n["is_head"]]
        stopper = ray.remote(num_cpus=0, max_retries=0)(_signal_runner)
        for n in targets:
            stopper.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                n["node_id"], soft=False)).remote()
        ids = {n["node_id"] for n in targets}
        try:
            wait_for(lambda: not any(n["Alive"] for n in ray.nodes() if n["NodeID"] in ids),
                     30, f"{len(ids)} raylet(s) to stop")
        except StartupTimeoutError as e:
            log.warning("%s; they stop when their executors do", e)

    def stop(self) -> None:
        """Stop raylets, disconnect, stop the head. Safe on a partial start."""
        import sys
        ray = sys.modules.get("ray")
        try:
            if ray is not None and ray.is_initialized():
                try:
                    self._stop_raylets()
                except Exception as e:  # stop must go on; executors' exit still ends them
                    log.warning("could not stop the raylets through Ray: %r", e)
                ray.shutdown()
        finally:
            if self._sc is not None:
                for key in (ADDRESS_ENV, CLUSTER_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
                    self._sc.environment.pop(key, None)
            self._cancel_job()
            if self._nodes_thread is not None:
                self._nodes_thread.join(START_TIMEOUT)
            nodes = [n for n in (self.local_raylet, self.head) if n is not None]
            for node in nodes:
                node.terminate()  # both stop at once
            for node in nodes:
                node.stop()
            self.local_raylet = self.head = None
            self._env_restore.close()


def _signal_runner():
    """Runs as a Ray task on a raylet: SIGTERM the node_runner that supervises it."""
    import signal
    os.kill(int(os.environ[RUNNER_PID_ENV]), signal.SIGTERM)

"""runtime="ray": Ray without Spark, on this machine or on an existing cluster."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import Any, Dict, List, Optional

from ..config import ContextSpec
from ..errors import OrcaRuntimeError
from ..node.host import node_ip
from .cluster import auth_env, refresh_ray_auth
from .raylet_task import node_temp_dir


class LocalRay:
    """A local Ray started with ``ray.init`` (token auth on), or a connection to ``address``."""

    def __init__(self, spec: ContextSpec):
        self.spec = spec
        self.cluster_id = secrets.token_hex(4)
        self.host = node_ip()
        self.temp_dir: Optional[str] = None
        self.ray_info: Optional[dict] = None
        self.webui_url: Optional[str] = None
        self.gcs_address: Optional[str] = None
        self._env = contextlib.ExitStack()

    def start(self) -> None:
        import ray
        from ray._private.worker import RayContext

        from .._environ import temporary_environ
        spec = self.spec
        if spec.address:
            # An existing cluster: its token comes from this process's environment.
            ctx = ray.init(address=spec.address)
        else:
            self._env.enter_context(temporary_environ(auth_env(secrets.token_hex(32))))
            refresh_ray_auth()
            self.temp_dir = node_temp_dir(self.cluster_id, "local")
            kwargs: Dict[str, Any] = {}
            if spec.object_store_memory:
                kwargs["object_store_memory"] = spec.object_store_memory.num_bytes
            if spec.system_config:
                kwargs["_system_config"] = spec.system_config
            ctx = ray.init(num_cpus=self.node_cpus(), num_gpus=0,
                           include_dashboard=spec.include_webui, dashboard_host=self.host,
                           _temp_dir=self.temp_dir, namespace=f"sparkorca-{self.cluster_id}",
                           **kwargs)
            if spec.include_webui:
                self.webui_url = f"http://{ctx.dashboard_url}" if ctx.dashboard_url else None
        if not isinstance(ctx, RayContext):
            raise OrcaRuntimeError("Ray connected through Ray Client (a ray:// address), which "
                                   "sparkorca does not support; give the cluster's GCS address")
        self.ray_info = dict(ctx.address_info)
        self.gcs_address = self.ray_info.get("gcs_address")

    def nodes(self) -> List[dict]:
        import ray
        return [{"node_id": n["NodeID"], "node_name": n.get("NodeName"), "alive": n["Alive"],
                 "is_head": False, "executor_id": None, "host": n["NodeManagerAddress"],
                 "resources": n.get("Resources", {})} for n in ray.nodes()]

    def node_cpus(self) -> int:
        """CPUs of a node: the local Ray's, or the smallest node's of an existing cluster."""
        if not self.spec.address:
            return self.spec.cores or os.cpu_count() or 1
        cpus = [n["resources"].get("CPU", 0) for n in self.nodes() if n["alive"]]
        return int(min(cpus)) if cpus else 0

    def stop(self) -> None:
        import sys
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        self._env.close()

"""Ray in a sparkorca context: RayContext (OrcaContext.get_ray_context()) and
``connect()`` for Ray calls from inside Spark tasks and UDFs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, List

from ..errors import NoContextError

if TYPE_CHECKING:
    from ray.actor import ActorHandle


class RayContext:
    """The Ray cluster of a sparkorca context (Orca's OrcaRayContext).

    Examples
    --------
    >>> ray_ctx = OrcaContext.get_ray_context()          # doctest: +SKIP
    >>> ray_ctx.address_info["gcs_address"]              # doctest: +SKIP
    '192.0.2.2:41233'
    >>> ray_ctx.redis_address == ray_ctx.address_info["gcs_address"]  # doctest: +SKIP
    True
    """

    def __init__(self, backend):
        self._backend = backend
        self._stopped = False
        self._kept: List[ActorHandle] = []  # actor handles that must live as long as Ray

    def _release_kept(self) -> None:
        import ray
        for handle in self._kept:  # before the nodes go, so no worker dies "unexpectedly"
            try:
                ray.kill(handle)
            except Exception:  # already gone with its node
                pass
        self._kept.clear()

    def keep_alive(self, handles) -> None:
        """Hold actor handles (e.g. the owners of data put by Spark tasks) until stop."""
        self._kept.extend(handles)

    @property
    def address_info(self) -> dict:
        """node_ip_address, gcs_address, object_store_address, raylet_socket_name,
        webui_url (None unless include_webui=True), session_dir, node_id."""
        info = self._backend.ray_info or {}
        return {
            "node_ip_address": info.get("node_ip_address"),
            "gcs_address": self._backend.gcs_address,
            "address": self._backend.gcs_address,
            "object_store_address": info.get("object_store_address"),
            "raylet_socket_name": info.get("raylet_socket_name"),
            "webui_url": self._backend.webui_url,
            "session_dir": info.get("session_dir"),
            "node_id": info.get("node_id"),
        }

    @property
    def redis_address(self) -> str:
        """Kept for Orca programs: Ray 2 has no Redis; this is the GCS address."""
        return self._backend.gcs_address

    @property
    def is_initialized(self) -> bool:
        return not self._stopped

    def nodes(self) -> List[dict]:
        """Every node of the cluster, alive or not, with its Spark executor id."""
        return self._backend.nodes()

    def lost_nodes(self) -> List[dict]:
        """Nodes that registered and are no longer alive (their executor was lost)."""
        return [n for n in self.nodes() if not n["alive"]]

    def stop(self) -> None:
        """Stop Ray only; Spark keeps running. stop_orca_context() also does this."""
        if not self._stopped:
            self._stopped = True
            self._release_kept()
            self._backend.stop()


def connect(**ray_init_kwargs) -> None:
    """Connect this process to the context's Ray cluster; for Spark tasks and UDFs.

    On the driver it does nothing (the driver is connected at init). Inside a
    Spark task it joins the raylet of the task's own executor, authenticated with
    the context's token (sent with the task, never through Spark conf).

    Examples
    --------
    >>> def predict(batches):                                 # doctest: +SKIP
    ...     import ray, sparkorca.ray
    ...     sparkorca.ray.connect()
    ...     for pdf in batches:
    ...         yield pdf.assign(y=ray.get([score.remote(x) for x in pdf.x]))
    """
    import ray
    if ray.is_initialized():
        return
    from ..spark.executor import executor_id
    from .cluster import ADDRESS_ENV, refresh_ray_auth
    from .node import CLUSTER_ENV
    from .raylet_task import node_temp_dir
    address = os.environ.get(ADDRESS_ENV)
    if not address:
        raise NoContextError(
            "sparkorca.ray.connect() found no Ray cluster: call it inside a Spark task of a "
            "context started with init_orca_context(..., init_ray_on_spark=True)")
    refresh_ray_auth()
    cluster_id = os.environ[CLUSTER_ENV]
    raylet_dir = node_temp_dir(cluster_id, executor_id())
    # no raylet on this executor: any node on this host will do
    temp_dir = raylet_dir if os.path.isdir(raylet_dir) else None
    ray_init_kwargs.setdefault("log_to_driver", False)
    ray.init(address=address, _temp_dir=temp_dir, namespace=f"sparkorca-{cluster_id}",
             **ray_init_kwargs)


__all__ = ["RayContext", "connect"]

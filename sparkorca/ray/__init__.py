"""Ray in a sparkorca context: OrcaRayContext (OrcaContext.get_ray_context()) and
``connect()`` for Ray calls from inside Spark tasks and UDFs."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING, Dict, List, Tuple

from ..errors import InvalidArgumentError, NoContextError

if TYPE_CHECKING:
    from ray.actor import ActorHandle


class OrcaRayContext:
    """The Ray cluster of a sparkorca context (Orca 2.x's OrcaRayContext).

    ``OrcaContext.get_ray_context()`` and ``OrcaRayContext.get()`` return it; Ray is
    started on demand, as Orca did. ``stop()`` ends Ray only (Spark goes on) and
    ``init()`` starts it again on the same object.

    Examples
    --------
    >>> ray_ctx = OrcaRayContext.get()                   # doctest: +SKIP
    >>> ray_ctx.address_info["gcs_address"]              # doctest: +SKIP
    '192.0.2.2:41233'
    >>> ray_ctx.redis_address == ray_ctx.address_info["gcs_address"]  # doctest: +SKIP
    True
    >>> ray_ctx.stop(); ray_ctx.initialized               # doctest: +SKIP
    False
    """

    def __init__(self, backend) -> None:
        self._backend = backend
        self._stopped = False
        # the Spark -> Ray hand-off's holders by node id, with their block sockets'
        # names (sparkorca.data.to_ray): they own the data Spark tasks put, and live
        # as long as Ray. The tasks authenticate to them with this secret.
        self.holders: Dict[str, Tuple[ActorHandle, str]] = {}
        self.holder_secret = secrets.token_bytes(32)

    @classmethod
    def get(cls, initialize: bool = True) -> "OrcaRayContext":
        """The running context's Ray; started first when ``initialize`` (Orca's default)."""
        from ..context import OrcaContext, current
        if initialize:
            return OrcaContext.get_ray_context()
        running = current()
        if running is None or running.ray is None:
            raise NoContextError("no Ray is running: call init_orca_context(..., "
                                 "init_ray_on_spark=True) or OrcaRayContext.get()")
        return running.ray

    def init(self, driver_cores: int = 0) -> dict:
        """Start Ray again after ``stop()``; returns address_info. A no-op while it runs.

        ``driver_cores`` is Orca's: sparkorca never schedules Ray tasks on the driver,
        so only 0 is accepted.
        """
        if driver_cores != 0:
            raise InvalidArgumentError("driver_cores", driver_cores, "0 (the driver runs no "
                                       "Ray tasks in sparkorca)")
        if self._stopped:
            from ..context import OrcaContext, current
            running = current()
            if running is None or running.ray is not self:
                raise NoContextError("this OrcaRayContext belongs to a context that was "
                                     "stopped; call init_orca_context(...) again and "
                                     "OrcaContext.get_ray_context() for its Ray")
            OrcaContext.get_ray_context()  # restarts through the context, on this object
        return self.address_info

    def _started(self, backend) -> None:
        self._backend = backend
        self._stopped = False

    def _ended(self) -> None:
        """Its context stopped (and Ray with it)."""
        self._stopped = True
        self.holders.clear()

    def _end_holders(self) -> None:
        import ray
        for handle, _ in self.holders.values():  # before the nodes go, so no worker dies
            try:                                # "unexpectedly"
                ray.kill(handle)
            except Exception:  # already gone with its node
                pass
        self.holders.clear()

    @property
    def address_info(self) -> dict:
        """node_ip_address, gcs_address, object_store_address, raylet_socket_name,
        webui_url (None unless include_webui=True), session_dir, node_id."""
        info = self._backend.ray_info or {}
        return {
            "node_ip_address": info.get("node_ip_address"),
            "gcs_address": self._backend.gcs_address,
            "address": self._backend.gcs_address,
            "redis_address": self._backend.gcs_address,
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
    def runtime(self) -> str:
        return "spark" if hasattr(self._backend, "plan") else "ray"

    @property
    def is_local(self) -> bool:
        """True when Ray runs beside a local[...] Spark driver or on this machine alone."""
        plan = getattr(self._backend, "plan", None)
        return plan.local if plan is not None else not self._backend.spec.address

    @property
    def num_ray_nodes(self) -> int:
        """Ray nodes that run tasks (the driver's head node runs none on a cluster)."""
        plan = getattr(self._backend, "plan", None)
        if plan is not None:
            return plan.num_ray_nodes
        return sum(1 for n in self.nodes() if n["alive"])

    @property
    def ray_node_cpu_cores(self) -> int:
        """CPUs each Ray node offers to tasks."""
        plan = getattr(self._backend, "plan", None)
        if plan is not None:
            return plan.node_cpus
        return self._backend.node_cpus()

    @property
    def initialized(self) -> bool:
        return not self._stopped

    is_initialized = initialized  # sparkorca's earlier name

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
            self._end_holders()
            self._backend.stop()


RayContext = OrcaRayContext  # sparkorca's earlier name


def connect(**ray_init_kwargs) -> None:
    """Connect this process to the context's Ray cluster; for Spark tasks and UDFs.

    On the driver it does nothing (the driver is connected at init). Inside a
    Spark task it joins the raylet of the task's own executor, authenticated with
    the context's token (sent with the task, never through Spark conf; over Spark
    Connect, read from what the executor's raylet left in its owner-only temp dir).

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
    if address:
        cluster_id = os.environ[CLUSTER_ENV]
        raylet_dir = node_temp_dir(cluster_id, executor_id())
        # no raylet on this executor: any node on this host will do
        temp_dir = raylet_dir if os.path.isdir(raylet_dir) else None
    else:
        address, cluster_id, temp_dir = _advertised_raylet()
    refresh_ray_auth()
    ray_init_kwargs.setdefault("log_to_driver", False)
    ray.init(address=address, _temp_dir=temp_dir, namespace=f"sparkorca-{cluster_id}",
             **ray_init_kwargs)


def _advertised_raylet():
    """Over Spark Connect no driver puts the cluster in the task's environment: the
    raylet of this executor left it in its temp dir (owner-only). The token goes into
    this process's environment, where Ray reads it."""
    from ..spark.executor import executor_id
    from .cluster import auth_env
    from .node import read_join_files
    executor = executor_id()
    found = read_join_files(executor)
    if len(found) != 1:
        raise NoContextError(
            "sparkorca.ray.connect() found no Ray cluster: call it inside a Spark task of a "
            "context started with init_orca_context(..., init_ray_on_spark=True)" if not found
            else f"sparkorca.ray.connect(): Spark executor {executor} serves "
                 f"{len(found)} Ray clusters ({', '.join(f['cluster_id'] for f in found)}); "
                 "one Ray cluster per Spark Connect server is supported")
    join = found[0]
    os.environ.update(auth_env(join["token"]))
    return join["address"], join["cluster_id"], join["temp_dir"]


__all__ = ["OrcaRayContext", "RayContext", "connect"]

"""Small programs that show a context working end to end (``sparkorca demo``)."""

from __future__ import annotations

import time


def parameter_server(cores: int = 2, iterations: int = 20) -> str:
    """The RayOnSpark quick start: a parameter server actor and two async workers,
    on a Ray cluster inside a local Spark application."""
    import numpy as np
    import ray

    from . import OrcaContext, orca_context

    with orca_context(cluster_mode="local", cores=cores, memory="2g", init_ray_on_spark=True,
                      conf={"spark.ui.showConsoleProgress": False}) as sc:
        ray_ctx = OrcaContext.get_ray_context()
        dim = 10

        @ray.remote
        class ParameterServer:
            def __init__(self, dim):
                self.parameters = np.zeros(dim)

            def get_parameters(self):
                return self.parameters

            def update_parameters(self, update):
                self.parameters += update

        @ray.remote
        def worker(ps, dim, num_iters):
            for _ in range(num_iters):
                parameters = ray.get(ps.get_parameters.remote())
                update = 1e-3 * parameters + np.ones(dim)
                ray.get(ps.update_parameters.remote(update))
                time.sleep(0.01)  # a little simulated work

        ps = ParameterServer.remote(dim)  # type: ignore[attr-defined]
        ray.get(worker.remote(ps, dim, 1))
        ray.get([worker.remote(ps, dim, iterations) for _ in range(2)])
        params = ray.get(ps.get_parameters.remote())
        spark_sum = sc.parallelize(range(1000), 4).sum()
        return (f"Ray cluster {ray_ctx.redis_address} inside Spark {sc.master}: "
                f"{len(ray.nodes())} Ray node(s); parameters after {2 * iterations + 1} async "
                f"updates = {np.round(params[:3], 4).tolist()}...; Spark sum(0..999) = "
                f"{spark_sum}")

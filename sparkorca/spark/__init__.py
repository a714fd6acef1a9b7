"""Spark: conf rendering per cluster mode, session creation, environment shipping."""

from __future__ import annotations

from ..config import build_spec
from .conf import SparkLaunch, needs_packed_env, render_launch


def render_conf(cluster_mode=None, runtime="spark", cores=None, memory="2g", num_nodes=1,
                init_ray_on_spark=False, log_output=False, **kwargs) -> SparkLaunch:
    """Dry run: what init_orca_context would start Spark with, without starting it.

    Takes init_orca_context's arguments. Where a mode ships the active
    environment and none is given, the archive is shown at the cache path it
    would be packed to (nothing is packed).

    Examples
    --------
    >>> launch = render_conf(cluster_mode="yarn-client", num_nodes=2, cores=4,
    ...                      memory="8g", hadoop_conf="/etc/hadoop/conf",
    ...                      penv_archive="env.tar.gz")  # doctest: +SKIP
    >>> launch.conf["spark.executor.instances"]           # doctest: +SKIP
    '2'
    """
    spec = build_spec(cluster_mode, runtime, cores, memory, num_nodes, init_ray_on_spark,
                      **kwargs)
    if needs_packed_env(spec):
        from .pyenv import archive_path_for
        spec = spec.replace(penv_archive=archive_path_for())
    return render_launch(spec, log_output=log_output)


__all__ = ["render_conf", "render_launch", "SparkLaunch"]

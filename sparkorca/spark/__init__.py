"""Spark: conf rendering per cluster mode, session creation, environment shipping.

Imported by executor-side code too (``spark.executor``), so nothing of the
driver side is loaded here until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conf import SparkLaunch


def render_conf(cluster_mode=None, runtime="spark", cores=None, memory="2g", num_nodes=1,
                init_ray_on_spark=False, log_output=False, **kwargs) -> "SparkLaunch":
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
    from ..config import FlagValues, build_spec
    from ..plan import make_plan
    from .conf import render_launch
    spec = build_spec(cluster_mode, runtime, cores, memory, num_nodes, init_ray_on_spark,
                      **kwargs)
    archive = None
    if needs_packed_env(spec):
        from .pyenv import archive_path_for
        archive = archive_path_for()
    return render_launch(make_plan(spec, FlagValues(log_output=log_output),
                                   penv_archive=archive))


def needs_packed_env(spec) -> bool:
    """Whether ``spec``'s cluster manager ships the active environment: it has no
    Python of ours and none was given (penv_archive, python_location)."""
    from .managers import manager_for
    return (manager_for(spec.cluster_mode).ships_env and spec.penv_archive is None
            and spec.python_location is None)


def __getattr__(name: str):
    if name in ("render_launch", "SparkLaunch"):
        from . import conf
        return getattr(conf, name)
    raise AttributeError(f"module 'sparkorca.spark' has no attribute {name!r}")


__all__ = ["render_conf", "render_launch", "SparkLaunch", "needs_packed_env"]

"""The client side of cluster_mode="spark-connect": this process has no JVM and
no SparkContext, only a session with a Spark Connect server that owns the
application (its driver, executors and their Python).
"""

from __future__ import annotations

import warnings
from typing import Dict

from ..config import ContextSpec
from ..errors import OrcaRuntimeError

# What RayOnSpark sizes itself by, read from the server's application.
CAPACITY_KEYS = ("spark.master", "spark.executor.cores", "spark.executor.instances",
                 "spark.cores.max", "spark.driver.memory")
# Sizing arguments the server's application already has: warned about, not applied.
SIZING = ("cores", "memory", "num_nodes", "spark_log_level")


def connect_session(spec: ContextSpec):
    """The Connect session for ``spec.master`` (an ``sc://`` URL), with ``spec.conf``
    set on it as session configuration."""
    ignored = [name for name in SIZING if getattr(spec, name) != getattr(ContextSpec(), name)]
    if ignored:
        warnings.warn(
            f"cluster_mode='spark-connect': the Connect server's application is already "
            f"sized and configured; ignoring {', '.join(ignored)} (RayOnSpark sizes itself "
            "by the server's executors; num_ray_nodes and ray_node_cpu_cores still apply)",
            stacklevel=5)
    try:
        import pyspark.sql.connect.session  # noqa: F401  (it checks the client's dependencies)
    except ImportError as e:
        raise OrcaRuntimeError(
            f"cluster_mode='spark-connect' needs pyspark's Spark Connect client ({e}); "
            "install it with pip install 'sparkorca[connect]'") from e
    from pyspark.sql import SparkSession
    assert spec.master is not None  # checked by the manager: an sc:// URL
    session = SparkSession.builder.remote(spec.master).getOrCreate()
    try:
        for key, value in spec.conf.items():
            session.conf.set(key, value)  # a static or unknown key: the server says which
    except BaseException:
        session.stop()
        raise
    return session


def server_conf(session) -> Dict[str, str]:
    """The server application's master and executor sizing, as Spark conf."""
    conf = {}
    for key in CAPACITY_KEYS:
        value = session.conf.get(key, None)
        if value is not None:
            conf[key] = value
    if "spark.master" not in conf:
        raise OrcaRuntimeError("the Spark Connect server did not tell its master "
                               "(spark.master), which RayOnSpark is sized by")
    return conf

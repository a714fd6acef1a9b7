"""Render a ContextSpec into what Spark is started with. Pure: no I/O, no processes.

``render_launch`` is the single place that knows which Spark property carries
which part of the spec on each cluster manager. Launchers only execute its
result, and most tests assert on it, so YARN and Kubernetes (which cannot run
on a development machine) are covered by the same code that a real run uses.
"""

from __future__ import annotations

import dataclasses
import sys
from ..config import ContextSpec, format_memory_mb, parse_memory

# The directory name the shipped environment is unpacked under on executors.
ENV_ALIAS = "python_env"
SHIPPED_PYTHON = f"./{ENV_ALIAS}/bin/python"
LOCAL_STANDALONE_MASTER = "spark://127.0.0.1:<port chosen when the cluster starts>"
# Executor-side module that forwards Python output to the driver (log_output).
LOG_DAEMON_MODULE = "sparkorca_log_daemon"
# Set in the cluster-side driver of a resubmitted program, which then adopts the
# context spark-submit made instead of submitting again.
SUBMITTED_ENV = "SPARKORCA_SUBMITTED"


@dataclasses.dataclass(frozen=True)
class SparkLaunch:
    """What a Spark application is started with, as data.

    ``conf`` is every Spark property; ``driver_env`` the environment of the driver
    (or of spark-submit in cluster deploy modes); ``python_exec`` the Python the
    executors run; ``py_files`` what joins every executor's import path.
    """

    master: str
    deploy_mode: str
    conf: dict
    driver_env: dict
    python_exec: str
    py_files: tuple = ()

    def submit_command(self, script: str, script_args=(), spark_submit: str = "spark-submit"):
        """The spark-submit argv that runs ``script`` with this launch (cluster deploy)."""
        cmd = [spark_submit, "--master", self.master, "--deploy-mode", self.deploy_mode]
        for k, v in sorted(self.conf.items()):
            cmd += ["--conf", f"{k}={v}"]
        return cmd + [script, *script_args]


def python_exec_for(spec: ContextSpec) -> str:
    """The Python executors run: given, shipped, the image's, or the driver's own."""
    if spec.python_location:
        return spec.python_location
    if spec.penv_archive:
        return SHIPPED_PYTHON
    if spec.cluster_mode.startswith("k8s"):
        return "python3"
    return sys.executable


def _master(spec: ContextSpec) -> str:
    mode = spec.cluster_mode
    if mode == "local":
        return spec.master or f"local[{spec.cores or '*'}]"
    if mode == "local-cluster":
        mb = parse_memory("memory", spec.memory) >> 20
        return f"local-cluster[{spec.num_nodes},{spec.executor_cores},{mb}]"
    if mode == "standalone":
        return spec.master or LOCAL_STANDALONE_MASTER
    if mode.startswith("yarn"):
        return "yarn"
    return spec.master or ""


def render_launch(spec: ContextSpec, log_output: bool = False) -> SparkLaunch:
    """Render ``spec`` into a SparkLaunch for its cluster mode.

    ``spec.penv_archive`` must already be resolved (packed or given) where the
    mode ships an environment; see ``sparkorca.spark.render_conf`` for the public
    dry run that resolves it.

    Examples
    --------
    >>> from sparkorca.config import ContextSpec
    >>> launch = render_launch(ContextSpec(cluster_mode="local", cores=2))
    >>> launch.master
    'local[2]'
    """
    mode = spec.cluster_mode
    conf = {"spark.app.name": "sparkorca"}
    env = {}
    deploy_mode = "cluster" if spec.is_cluster_deploy else "client"
    python_exec = python_exec_for(spec)

    if spec.is_local:
        conf["spark.driver.memory"] = spec.memory if mode == "local" else spec.driver_memory
        if mode == "local-cluster":
            conf["spark.executor.memory"] = spec.memory
            conf["spark.executor.cores"] = str(spec.executor_cores)
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        conf["spark.driver.host"] = "127.0.0.1"
    elif mode != "spark-submit":
        conf.update({
            "spark.submit.deployMode": deploy_mode,
            "spark.executor.cores": str(spec.executor_cores),
            "spark.executor.memory": spec.memory,
            "spark.driver.memory": spec.driver_memory,
        })
        if mode == "standalone":
            conf["spark.cores.max"] = str(spec.executor_cores * spec.num_nodes)
        else:
            conf["spark.executor.instances"] = str(spec.num_nodes)
        if spec.extra_executor_memory_for_ray:
            overhead = parse_memory("extra_executor_memory_for_ray",
                                    spec.extra_executor_memory_for_ray)
            conf["spark.executor.memoryOverhead"] = format_memory_mb(overhead)
        if spec.is_cluster_deploy:
            conf["spark.driver.cores"] = str(spec.driver_cores)
            # spark-submit starts the cluster-side driver with this Python.
            conf["spark.pyspark.python"] = python_exec
            conf["spark.pyspark.driver.python"] = python_exec
            driver_env_prefix = ("spark.yarn.appMasterEnv." if mode.startswith("yarn")
                                 else "spark.kubernetes.driverEnv.")
            conf[driver_env_prefix + SUBMITTED_ENV] = "1"
        else:
            conf["spark.driver.host"] = spec.driver_host
            conf["spark.driver.bindAddress"] = spec.driver_host
            env["SPARK_LOCAL_IP"] = spec.driver_host

    if spec.penv_archive and mode not in ("spark-submit",) and not spec.is_local:
        conf["spark.archives"] = f"{spec.penv_archive}#{ENV_ALIAS}"
        conf["spark.executorEnv.PYSPARK_PYTHON"] = python_exec
        if mode == "yarn-cluster":
            conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = python_exec

    if mode.startswith("yarn"):
        env["HADOOP_CONF_DIR"] = spec.hadoop_conf
        if spec.hadoop_user_name:
            env["HADOOP_USER_NAME"] = spec.hadoop_user_name
            conf["spark.executorEnv.HADOOP_USER_NAME"] = spec.hadoop_user_name
            conf["spark.yarn.appMasterEnv.HADOOP_USER_NAME"] = spec.hadoop_user_name
    if mode.startswith("k8s"):
        conf["spark.kubernetes.container.image"] = spec.container_image

    if log_output and mode not in ("local", "spark-submit"):
        conf["spark.python.daemon.module"] = LOG_DAEMON_MODULE

    for k, v in spec.env.items():
        conf[f"spark.executorEnv.{k}"] = v
        env[k] = v
    if spec.is_cluster_deploy and spec.extra_python_lib:
        conf["spark.submit.pyFiles"] = ",".join(spec.extra_python_lib)
    # The user's conf is applied last: an explicit property always wins.
    conf.update(spec.conf)
    return SparkLaunch(
        master=_master(spec), deploy_mode=deploy_mode, conf=dict(sorted(conf.items())),
        driver_env=env, python_exec=python_exec,
        py_files=() if spec.is_cluster_deploy else spec.extra_python_lib)


def needs_packed_env(spec: ContextSpec) -> bool:
    """Whether ``spec``'s mode ships the active environment when none is given.

    YARN containers have no Python of ours, so the active environment is packed
    and shipped. K8s uses its container image, standalone and local modes the
    Python at ``python_location`` or the driver's own path.
    """
    return (spec.cluster_mode.startswith("yarn") and spec.penv_archive is None
            and spec.python_location is None)

"""What each cluster manager means, one record each: its master, its requirements,
its part of the Spark conf, whether it ships the Python environment and whether
executors must call back to the driver. Pure: no I/O, no processes.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..config import format_memory_mb
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from ..config import ContextSpec

# The directory name the shipped environment is unpacked under on executors.
ENV_ALIAS = "python_env"
SHIPPED_PYTHON = f"./{ENV_ALIAS}/bin/python"
LOCAL_STANDALONE_MASTER = "spark://127.0.0.1:<port chosen when the cluster starts>"
# Set in the cluster-side driver of a resubmitted program, which then adopts the
# context spark-submit made instead of submitting again.
SUBMITTED_ENV = "SPARKORCA_SUBMITTED"
LOOPBACK = "127.0.0.1"

Conf = Dict[str, str]


class ClusterManager:
    """The defaults describe a manager that runs executors on other machines and
    leaves the driver in this process (client deploy mode)."""

    modes: Tuple[str, ...] = ()
    # Starts executors of its own (sized by cores/memory/num_nodes); spark-submit does not.
    sizes_executors = True
    # Packs the active environment when neither penv_archive nor python_location is given.
    ships_env = False

    def problems(self, spec: "ContextSpec") -> List[InvalidArgumentError]:
        """Every requirement of this manager that ``spec`` does not meet."""
        return []

    def master(self, spec: "ContextSpec") -> str:
        return spec.master or ""

    def driver_reachable(self, spec: "ContextSpec") -> bool:
        """Whether executors on other machines must call back to the driver."""
        return True

    def python_exec(self, spec: "ContextSpec", archive: Optional[str]) -> str:
        """The Python executors run: given, shipped, or the driver's own."""
        if spec.python_location:
            return spec.python_location
        if archive:
            return SHIPPED_PYTHON
        return sys.executable

    def conf(self, spec: "ContextSpec", driver_host: str, python_exec: str) -> Tuple[Conf, Conf]:
        """This manager's Spark properties and driver environment."""
        conf = {"spark.submit.deployMode": "cluster" if spec.is_cluster_deploy else "client",
                "spark.executor.cores": str(spec.executor_cores),
                "spark.executor.memory": spec.memory.text,
                "spark.driver.memory": spec.driver_memory.text,
                "spark.executor.instances": str(spec.num_nodes)}
        env: Conf = {}
        if spec.extra_executor_memory_for_ray:
            conf["spark.executor.memoryOverhead"] = format_memory_mb(
                spec.extra_executor_memory_for_ray.num_bytes)
        if spec.is_cluster_deploy:
            conf["spark.driver.cores"] = str(spec.driver_cores)
            # spark-submit starts the cluster-side driver with this Python.
            conf["spark.pyspark.python"] = python_exec
            conf["spark.pyspark.driver.python"] = python_exec
        else:
            conf["spark.driver.host"] = driver_host
            conf["spark.driver.bindAddress"] = driver_host
            env["SPARK_LOCAL_IP"] = driver_host
        return conf, env

    def archive_conf(self, spec: "ContextSpec", archive: str, python_exec: str) -> Conf:
        """How the environment archive reaches the executors."""
        return {"spark.archives": f"{archive}#{ENV_ALIAS}",
                "spark.executorEnv.PYSPARK_PYTHON": python_exec}


class Local(ClusterManager):
    modes = ("local",)

    def problems(self, spec):
        if spec.master is not None and not spec.master.startswith("local"):
            return [InvalidArgumentError(
                "master", spec.master, "None or a local master such as 'local[4]', "
                "'local[*]' or 'local-cluster[2,1,1024]' when cluster_mode='local'")]
        return []

    def master(self, spec):
        return spec.master or f"local[{spec.cores or '*'}]"

    def driver_reachable(self, spec):
        return False

    def conf(self, spec, driver_host, python_exec):
        # The driver JVM is the one executor: its memory is the executors' memory.
        return ({"spark.driver.memory": spec.memory.text, "spark.driver.host": LOOPBACK},
                {"SPARK_LOCAL_IP": LOOPBACK})

    def archive_conf(self, spec, archive, python_exec):
        return {}  # executors run on this machine, with its Python


class LocalCluster(Local):
    modes = ("local-cluster",)

    def problems(self, spec):
        if spec.master is not None:
            return [InvalidArgumentError(
                "master", spec.master, "None when cluster_mode='local-cluster'",
                hint="the master is built from num_nodes, cores and memory")]
        return []

    def master(self, spec):
        return f"local-cluster[{spec.num_nodes},{spec.executor_cores},{spec.memory.mb}]"

    def conf(self, spec, driver_host, python_exec):
        return ({"spark.driver.memory": spec.driver_memory.text,
                 "spark.executor.memory": spec.memory.text,
                 "spark.executor.cores": str(spec.executor_cores),
                 "spark.driver.host": LOOPBACK},
                {"SPARK_LOCAL_IP": LOOPBACK})


class Standalone(ClusterManager):
    modes = ("standalone",)

    def problems(self, spec):
        if spec.master is not None and not spec.master.startswith("spark://"):
            return [InvalidArgumentError(
                "master", spec.master,
                "None (start a cluster on this machine) or 'spark://host:port'")]
        return []

    def master(self, spec):
        return spec.master or LOCAL_STANDALONE_MASTER

    def driver_reachable(self, spec):
        if not spec.master:
            return False  # the cluster this process starts, on 127.0.0.1
        host = spec.master[len("spark://"):].split(",")[0].rsplit(":", 1)[0]
        return host not in (LOOPBACK, "localhost")

    def conf(self, spec, driver_host, python_exec):
        conf, env = super().conf(spec, driver_host, python_exec)
        del conf["spark.executor.instances"]
        conf["spark.cores.max"] = str(spec.executor_cores * spec.num_nodes)
        return conf, env


class Yarn(ClusterManager):
    modes = ("yarn-client", "yarn-cluster")
    ships_env = True  # YARN containers have no Python of ours

    def problems(self, spec):
        out = []
        if spec.master not in (None, "yarn"):
            out.append(InvalidArgumentError("master", spec.master, "None or 'yarn' for YARN modes"))
        if not spec.hadoop_conf:
            out.append(InvalidArgumentError(
                "hadoop_conf", None, "the Hadoop configuration directory for YARN modes",
                hint="pass hadoop_conf='/etc/hadoop/conf' or set HADOOP_CONF_DIR"))
        elif not _is_dir(spec.hadoop_conf):
            out.append(InvalidArgumentError("hadoop_conf", spec.hadoop_conf,
                                            "an existing directory"))
        return out

    def master(self, spec):
        return "yarn"

    def conf(self, spec, driver_host, python_exec):
        conf, env = super().conf(spec, driver_host, python_exec)
        if spec.is_cluster_deploy:
            conf[f"spark.yarn.appMasterEnv.{SUBMITTED_ENV}"] = "1"
        env["HADOOP_CONF_DIR"] = spec.hadoop_conf or ""
        if spec.hadoop_user_name:
            env["HADOOP_USER_NAME"] = spec.hadoop_user_name
            conf["spark.executorEnv.HADOOP_USER_NAME"] = spec.hadoop_user_name
            conf["spark.yarn.appMasterEnv.HADOOP_USER_NAME"] = spec.hadoop_user_name
        return conf, env

    def archive_conf(self, spec, archive, python_exec):
        conf = super().archive_conf(spec, archive, python_exec)
        if spec.is_cluster_deploy:
            conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = python_exec
        return conf


class Kubernetes(ClusterManager):
    modes = ("k8s-client", "k8s-cluster")

    def problems(self, spec):
        out = []
        if not spec.master or not spec.master.startswith("k8s://"):
            out.append(InvalidArgumentError(
                "master", spec.master, "the API server as 'k8s://https://<host>:<port>' for "
                "K8s modes", hint="e.g. master='k8s://https://127.0.0.1:6443'"))
        if not spec.container_image:
            out.append(InvalidArgumentError(
                "container_image", None, "a Spark image with Python for K8s modes",
                hint="e.g. container_image='apache/spark-py:v4.0.0'"))
        return out

    def python_exec(self, spec, archive):
        if spec.python_location or archive:
            return super().python_exec(spec, archive)
        return "python3"  # the image's Python

    def conf(self, spec, driver_host, python_exec):
        conf, env = super().conf(spec, driver_host, python_exec)
        if spec.is_cluster_deploy:
            conf[f"spark.kubernetes.driverEnv.{SUBMITTED_ENV}"] = "1"
        conf["spark.kubernetes.container.image"] = spec.container_image or ""
        return conf, env


class Unmanaged(ClusterManager):
    """Someone else started the application: nothing of ours is applied."""

    sizes_executors = False

    def driver_reachable(self, spec):
        return False

    def conf(self, spec, driver_host, python_exec):
        return {}, {}

    def archive_conf(self, spec, archive, python_exec):
        return {}


class SparkSubmit(Unmanaged):
    """spark-submit configured everything."""

    modes = ("spark-submit",)


class SparkConnect(Unmanaged):
    """A Spark Connect server owns the application: its JVM, executors and their
    Python. This process is a thin client; nothing of ours is launched or shipped."""

    modes = ("spark-connect",)
    # Options a Connect client cannot apply: the server started its JVMs and
    # executors, with their environment, before this program ran.
    SERVER_OWNED = ("driver_cores", "driver_memory", "extra_python_lib", "env",
                    "container_image", "penv_archive", "python_location", "hadoop_conf",
                    "hadoop_user_name", "extra_executor_memory_for_ray", "redirect_spark_log")

    def problems(self, spec):
        from ..config import ContextSpec
        errors = []
        if not (spec.master or "").startswith("sc://"):
            errors.append(InvalidArgumentError(
                "master", spec.master, "a Spark Connect URL such as 'sc://host:15002' when "
                "cluster_mode='spark-connect' (or SPARK_REMOTE set to one)"))
        default = ContextSpec()
        for name in self.SERVER_OWNED:
            if getattr(spec, name) != getattr(default, name):
                errors.append(InvalidArgumentError(
                    name, getattr(spec, name), "not given when cluster_mode='spark-connect'",
                    hint="the Connect server started the application's JVMs, executors and "
                         "their Python; set it where the server is started"))
        return errors


def _is_dir(path: str) -> bool:
    import os
    return os.path.isdir(path)


MANAGERS = {mode: manager for manager in (Local(), LocalCluster(), Standalone(), Yarn(),
                                          Kubernetes(), SparkSubmit(), SparkConnect())
            for mode in manager.modes}


def manager_for(cluster_mode: str) -> ClusterManager:
    return MANAGERS[cluster_mode]

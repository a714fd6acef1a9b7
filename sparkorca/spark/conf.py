"""Render a Plan into what Spark is started with. Pure: no I/O, no processes.

``render_launch`` is the single place that puts a context's plan into Spark
properties: the common part, then the cluster manager's part (see
``managers``), then the user's conf, last, so an explicit property always wins.
Launchers only execute its result, and most tests assert on it, so YARN and
Kubernetes (which cannot run on a development machine) are covered by the same
code that a real run uses.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..plan import Plan

# Executor-side module that forwards Python output to the driver (log_output).
LOG_DAEMON_MODULE = "sparkorca_log_daemon"


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


def render_launch(plan: "Plan") -> SparkLaunch:
    """Render ``plan`` into a SparkLaunch for its cluster manager.

    Examples
    --------
    >>> from sparkorca.config import ContextSpec, FlagValues
    >>> from sparkorca.plan import make_plan
    >>> render_launch(make_plan(ContextSpec(cluster_mode="local", cores=2), FlagValues())).master
    'local[2]'
    """
    spec, manager = plan.spec, plan.manager
    python_exec = plan.python_exec
    conf, env = manager.conf(spec, plan.driver_host, python_exec)
    conf = {"spark.app.name": "sparkorca", **conf}
    if plan.penv_archive:
        conf.update(manager.archive_conf(spec, plan.penv_archive, python_exec))
    if plan.flags.log_output and spec.cluster_mode not in ("local", "spark-submit"):
        conf["spark.python.daemon.module"] = LOG_DAEMON_MODULE
    for k, v in spec.env.items():
        conf[f"spark.executorEnv.{k}"] = v
        env[k] = v
    if spec.is_cluster_deploy and spec.extra_python_lib:
        conf["spark.submit.pyFiles"] = ",".join(spec.extra_python_lib)
    conf.update(spec.conf)  # the user's conf is applied last: an explicit property wins
    return SparkLaunch(
        master=plan.master, deploy_mode="cluster" if spec.is_cluster_deploy else "client",
        conf=dict(sorted(conf.items())), driver_env=env, python_exec=python_exec,
        py_files=() if spec.is_cluster_deploy else spec.extra_python_lib)

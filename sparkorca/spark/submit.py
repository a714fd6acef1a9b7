"""Cluster deploy modes: run the user's script again through spark-submit.

In yarn-cluster and k8s-cluster the driver runs on the cluster, so the program
started on the laptop only submits itself and returns spark-submit's exit code.
The resubmitted program finds ``SUBMITTED_ENV`` set and adopts the context that
spark-submit configured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

from ..errors import InvalidArgumentError
from .conf import SparkLaunch
from .java import spark_submit
from .managers import SUBMITTED_ENV


def running_resubmitted() -> bool:
    return os.environ.get(SUBMITTED_ENV) == "1"


def main_script() -> str:
    """The path of the program's main script, which cluster deploy resubmits."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if not script or not os.path.isfile(script):
        raise InvalidArgumentError(
            "cluster_mode", "yarn-cluster/k8s-cluster", "a program started from a script file",
            hint="cluster deploy modes resubmit the script through spark-submit, which an "
                 "interactive session has not got; use a client mode (yarn-client, k8s-client) "
                 "in notebooks")
    return os.path.abspath(script)


def run_spark_submit(argv: Sequence[str], env: dict) -> int:
    """Run spark-submit in the foreground with this process's stdio; return its exit code."""
    full_env = {**os.environ, **env, SUBMITTED_ENV: "1"}
    full_env.pop("PYSPARK_GATEWAY_PORT", None)
    full_env.pop("PYSPARK_GATEWAY_SECRET", None)
    return subprocess.run(list(argv), env=full_env).returncode


def resubmit(launch: SparkLaunch, script: str, script_args: Sequence[str]) -> int:
    argv = launch.submit_command(script, script_args, spark_submit=spark_submit())
    return run_spark_submit(argv, launch.driver_env)

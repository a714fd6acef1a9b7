"""The shape of the package: executor-side entry points load nothing of the driver."""

import json
import subprocess
import sys

# What the processes on executors run or import: node runners, node programs, the
# Spark-task bodies that launch them, and the feeder.
EXECUTOR_SIDE = ("sparkorca.ray.node_runner", "sparkorca.ray.raylet_task",
                 "sparkorca.cluster.node", "sparkorca.cluster.node_task",
                 "sparkorca.cluster.feeder", "sparkorca.cluster.TFParallel",
                 "sparkorca.cluster.tfmodel_worker")
DRIVER_SIDE = ("sparkorca.context", "sparkorca.config", "sparkorca.plan",
               "sparkorca.cluster.driver", "sparkorca.ray.cluster", "sparkorca.node.hub",
               "sparkorca.node.job", "sparkorca.spark.session", "sparkorca.spark.conf",
               "pyspark.sql", "pyspark.ml", "ray", "tensorflow", "torch")


def test_executor_side_entry_points_import_nothing_of_the_driver_side():
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in EXECUTOR_SIDE)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert not loaded & set(DRIVER_SIDE), sorted(loaded & set(DRIVER_SIDE))
    assert not any(m.startswith(("pyspark.sql.", "ray.")) for m in loaded)

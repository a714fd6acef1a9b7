"""Pure sizing of RayOnSpark against the Spark application, and GPU env."""

import pytest
from pyspark.resource import ResourceInformation

from sparkorca import InvalidArgumentError
from sparkorca.config import build_spec
from sparkorca.ray.sizing import MIN_OBJECT_STORE, plan_ray, spark_capacity
from sparkorca.spark.executor import gpu_env


def test_capacity_from_master_and_conf():
    assert spark_capacity("local[3]", {}) == spark_capacity("local[3]", {"x": "1"})
    cap = spark_capacity("local[3]", {})
    assert (cap.executors, cap.cores, cap.local) == (1, 3, True)
    cap = spark_capacity("local-cluster[2,1,1024]", {})
    assert (cap.executors, cap.cores, cap.local) == (2, 1, False)
    cap = spark_capacity("yarn", {"spark.executor.instances": "4", "spark.executor.cores": "8"})
    assert (cap.executors, cap.cores) == (4, 8)
    cap = spark_capacity("spark://h:7077", {"spark.cores.max": "6", "spark.executor.cores": "2"})
    assert (cap.executors, cap.cores) == (3, 2)


def test_plan_defaults_to_one_raylet_per_executor_with_its_cores():
    spec = build_spec(cluster_mode="local-cluster", num_nodes=3, cores=2, memory="1g")
    plan = plan_ray(spec, spark_capacity("local-cluster[3,2,1024]", {}), barrier=True)
    assert (plan.num_ray_nodes, plan.node_cpus, plan.barrier, plan.local) == (3, 2, True, False)
    assert plan.node_object_store == int((1 << 30) * 0.3)


def test_object_store_sizes():
    spec = build_spec(cluster_mode="local", memory="8g", extra_executor_memory_for_ray="2g",
                      driver_memory="100m")
    plan = plan_ray(spec, spark_capacity("local[2]", {}), barrier=True)
    assert plan.node_object_store == int((2 << 30) * 0.3)  # from the memory set aside for Ray
    assert plan.head_object_store == MIN_OBJECT_STORE  # never below Ray's minimum
    spec = build_spec(cluster_mode="local", object_store_memory="500m")
    plan = plan_ray(spec, spark_capacity("local[2]", {}), barrier=False)
    assert plan.node_object_store == plan.head_object_store == 500 << 20


def test_requests_beyond_the_app_are_refused():
    spec = build_spec(cluster_mode="yarn-client", hadoop_conf="/", num_ray_nodes=5)
    cap = spark_capacity("yarn", {"spark.executor.instances": "4", "spark.executor.cores": "2"})
    with pytest.raises(InvalidArgumentError, match="num_ray_nodes=5 .*at most 4"):
        plan_ray(spec, cap, barrier=True)


def test_gpu_env_from_spark_task_resources():
    class Task:  # the two methods of pyspark's TaskContext that gpu_env reads
        def __init__(self, resources):
            self._resources = resources

        def resources(self):
            return self._resources

    assert gpu_env(Task({})) == {}
    assert gpu_env(None) == {}
    gpus = {"gpu": ResourceInformation("gpu", ["1", "3"])}
    assert gpu_env(Task(gpus)) == {"CUDA_VISIBLE_DEVICES": "1,3"}

"""Conf rendering per cluster mode: pure, so YARN and K8s are tested here."""

import sys

import pytest

from sparkorca.config import ContextSpec, FlagValues
from sparkorca.plan import make_plan
from sparkorca.spark import render_conf
from sparkorca.spark.conf import render_launch
from sparkorca.spark.managers import SHIPPED_PYTHON


@pytest.fixture
def hadoop_conf(tmp_path):
    d = tmp_path / "hadoop-conf"
    d.mkdir()
    return str(d)


@pytest.fixture
def archive(tmp_path):
    p = tmp_path / "env.tar.gz"
    p.write_bytes(b"")
    return str(p)


@pytest.fixture
def pylib(tmp_path):
    p = tmp_path / "dep.py"
    p.write_text("X = 1\n")
    return str(p)


def test_local_defaults_to_all_cores_bound_to_loopback():
    launch = render_conf(cluster_mode="local", memory="3g")
    assert launch.master == "local[*]"
    assert launch.conf["spark.driver.memory"] == "3g"
    assert launch.conf["spark.driver.host"] == "127.0.0.1"
    assert launch.driver_env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert launch.python_exec == sys.executable
    assert render_conf(cluster_mode="local", cores=3).master == "local[3]"
    assert render_conf(cluster_mode="local", master="local-cluster[2,1,1024]").master == \
        "local-cluster[2,1,1024]"


def test_local_cluster_master_is_built_from_sizes():
    launch = render_conf(cluster_mode="local-cluster", num_nodes=3, cores=2, memory="1536m")
    assert launch.master == "local-cluster[3,2,1536]"
    assert launch.conf["spark.executor.memory"] == "1536m"
    assert launch.conf["spark.executor.cores"] == "2"


def test_standalone_conf(archive, pylib):
    launch = render_conf(cluster_mode="standalone", master="spark://10.0.0.5:7077", num_nodes=3,
                         cores=4, memory="8g", penv_archive=archive, extra_python_lib=pylib)
    c = launch.conf
    assert launch.master == "spark://10.0.0.5:7077"
    assert (c["spark.executor.cores"], c["spark.executor.memory"], c["spark.cores.max"]) == \
        ("4", "8g", "12")
    assert c["spark.archives"] == f"{archive}#python_env"
    assert launch.python_exec == SHIPPED_PYTHON == c["spark.executorEnv.PYSPARK_PYTHON"]
    assert launch.py_files == (pylib,)


def test_yarn_client(hadoop_conf, archive, pylib):
    launch = render_conf(cluster_mode="yarn-client", num_nodes=4, cores=8, memory="16g",
                         driver_cores=2, driver_memory="6g", hadoop_conf=hadoop_conf,
                         hadoop_user_name="alice", penv_archive=archive,
                         extra_executor_memory_for_ray="3g", extra_python_lib=pylib)
    c = launch.conf
    assert launch.master == "yarn" and launch.deploy_mode == "client"
    assert c["spark.submit.deployMode"] == "client"
    assert c["spark.executor.instances"] == "4"
    assert c["spark.executor.cores"] == "8"
    assert c["spark.executor.memory"] == "16g"
    assert c["spark.executor.memoryOverhead"] == "3072m"
    assert c["spark.driver.memory"] == "6g"
    assert c["spark.archives"] == f"{archive}#python_env"
    assert c["spark.executorEnv.PYSPARK_PYTHON"] == "./python_env/bin/python"
    assert c["spark.executorEnv.HADOOP_USER_NAME"] == "alice"
    assert launch.driver_env["HADOOP_CONF_DIR"] == hadoop_conf
    assert launch.driver_env["HADOOP_USER_NAME"] == "alice"
    # the driver binds the node address, not 0.0.0.0
    assert c["spark.driver.bindAddress"] == c["spark.driver.host"] != "0.0.0.0"
    assert launch.driver_env["SPARK_LOCAL_IP"] == c["spark.driver.host"]
    assert launch.py_files == (pylib,)


def test_yarn_cluster_resubmit_command(hadoop_conf, archive, pylib):
    launch = render_conf(cluster_mode="yarn-cluster", num_nodes=2, cores=2, driver_cores=3,
                         hadoop_conf=hadoop_conf, penv_archive=archive, extra_python_lib=pylib)
    c = launch.conf
    assert launch.deploy_mode == "cluster"
    assert c["spark.driver.cores"] == "3"
    assert c["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./python_env/bin/python"
    assert c["spark.pyspark.python"] == "./python_env/bin/python"
    assert c["spark.submit.pyFiles"] == pylib
    assert c["spark.yarn.appMasterEnv.SPARKORCA_SUBMITTED"] == "1"
    cmd = launch.submit_command("/home/u/train.py", ["--epochs", "3"], spark_submit="ss")
    assert cmd[:5] == ["ss", "--master", "yarn", "--deploy-mode", "cluster"]
    i = cmd.index("spark.executor.instances=2")
    assert cmd[i - 1] == "--conf"
    assert cmd[-3:] == ["/home/u/train.py", "--epochs", "3"]
    assert f"spark.submit.pyFiles={pylib}" in cmd


def test_yarn_packs_the_active_env_when_no_archive_is_given(hadoop_conf, tmp_path, monkeypatch):
    from sparkorca.spark.pyenv import archive_path_for
    monkeypatch.setenv("SPARKORCA_CACHE_DIR", str(tmp_path / "cache"))
    launch = render_conf(cluster_mode="yarn-client", hadoop_conf=hadoop_conf)
    expected = archive_path_for()
    assert expected.startswith(str(tmp_path / "cache"))
    assert launch.conf["spark.archives"] == f"{expected}#python_env"
    # python_location means the executors have Python already: nothing is shipped
    launch = render_conf(cluster_mode="yarn-client", hadoop_conf=hadoop_conf,
                         python_location="/opt/py/bin/python")
    assert "spark.archives" not in launch.conf
    assert launch.python_exec == "/opt/py/bin/python"


def test_k8s_client():
    launch = render_conf(cluster_mode="k8s-client", master="k8s://https://10.1.2.3:6443",
                         container_image="me/spark-py:4", num_nodes=2, cores=2, memory="4g",
                         extra_executor_memory_for_ray="1g")
    c = launch.conf
    assert launch.master == "k8s://https://10.1.2.3:6443"
    assert c["spark.kubernetes.container.image"] == "me/spark-py:4"
    assert c["spark.executor.instances"] == "2"
    assert c["spark.executor.memoryOverhead"] == "1024m"
    assert launch.python_exec == "python3"  # the image's Python
    assert "spark.archives" not in c
    assert c["spark.driver.host"] == launch.driver_env["SPARK_LOCAL_IP"]


def test_k8s_cluster_with_archive(archive):
    launch = render_conf(cluster_mode="k8s-cluster", master="k8s://https://10.1.2.3:6443",
                         container_image="me/spark-py:4", penv_archive=archive)
    c = launch.conf
    assert launch.deploy_mode == "cluster"
    assert c["spark.archives"] == f"{archive}#python_env"
    assert c["spark.pyspark.driver.python"] == "./python_env/bin/python"
    assert c["spark.kubernetes.driverEnv.SPARKORCA_SUBMITTED"] == "1"
    assert "spark.driver.host" not in c  # the driver runs in a pod


def test_conf_and_env_pass_through_and_user_conf_wins():
    launch = render_conf(cluster_mode="local", conf={"spark.driver.memory": "5g",
                                                     "spark.sql.shuffle.partitions": 7,
                                                     "spark.eventLog.enabled": False},
                         env={"MY_SETTING": "on"})
    c = launch.conf
    assert c["spark.driver.memory"] == "5g"
    assert c["spark.sql.shuffle.partitions"] == "7"
    assert c["spark.eventLog.enabled"] == "false"
    assert c["spark.executorEnv.MY_SETTING"] == "on"
    assert launch.driver_env["MY_SETTING"] == "on"


def test_log_output_sets_the_forwarding_daemon_off_local():
    assert "spark.python.daemon.module" not in render_conf(cluster_mode="local",
                                                           log_output=True).conf
    assert render_conf(cluster_mode="local-cluster", log_output=True).conf[
        "spark.python.daemon.module"] == "sparkorca_log_daemon"


def test_no_secret_or_token_in_rendered_conf():
    plan = make_plan(ContextSpec(cluster_mode="local-cluster"), FlagValues(log_output=True))
    launch = render_launch(plan)
    assert not any("TOKEN" in k.upper() or "SECRET" in k.upper() for k in launch.conf)


def test_standalone_driver_binds_the_node_address_for_a_remote_master(monkeypatch):
    monkeypatch.setenv("SPARKORCA_NODE_IP", "10.0.0.9")
    remote = render_conf(cluster_mode="standalone", master="spark://10.0.0.5:7077").conf
    assert remote["spark.driver.host"] == remote["spark.driver.bindAddress"] == "10.0.0.9"
    local = render_conf(cluster_mode="standalone", master="spark://127.0.0.1:7077").conf
    assert local["spark.driver.host"] == "127.0.0.1"


def test_hadoop_conf_dir_from_the_environment(tmp_path, monkeypatch, archive):
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    launch = render_conf(cluster_mode="yarn-client", penv_archive=archive)
    assert launch.driver_env["HADOOP_CONF_DIR"] == str(tmp_path)

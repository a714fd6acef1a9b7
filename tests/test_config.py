"""Bad input is refused before anything starts, naming parameter, value and the fix."""

import builtins

import pytest

from sparkorca import (
    InvalidArgumentError,
    OrcaContext,
    OrcaError,
    UnknownArgumentError,
    init_orca_context,
)
from sparkorca.config import build_spec, parse_memory


def _no_jvm():
    from pyspark import SparkContext
    return SparkContext._gateway is None and SparkContext._active_spark_context is None


@pytest.mark.parametrize("kwargs, name, bad, accepted", [
    (dict(cluster_mode="mesos"), "cluster_mode", "'mesos'", "local-cluster"),
    (dict(memory="4gb"), "memory", "'4gb'", "'2g'"),
    (dict(memory="-1g"), "memory", "'-1g'", "'2g'"),
    (dict(memory="lots"), "memory", "'lots'", "'2g'"),
    (dict(memory="0g"), "memory", "'0g'", "positive integer"),
    (dict(cores=0), "cores", "0", "positive integer"),
    (dict(cores=-2), "cores", "-2", "positive integer"),
    (dict(cores=1.5), "cores", "1.5", "positive integer"),
    (dict(cores=True), "cores", "True", "positive integer"),
    (dict(num_nodes=0), "num_nodes", "0", "positive integer"),
    (dict(runtime="dask"), "runtime", "'dask'", "one of spark, ray"),
    (dict(driver_memory="2 GB"), "driver_memory", "'2 GB'", "'512m'"),
    (dict(object_store_memory="2gb"), "object_store_memory", "'2gb'", "'2g'"),
    (dict(extra_python_lib="/nonexistent/dep.py"), "extra_python_lib", "/nonexistent/dep.py",
     "existing files"),
    (dict(extra_python_lib="dep.txt"), "extra_python_lib", "dep.txt", ".py, .zip, .egg"),
    (dict(penv_archive="/nonexistent/env.tar.gz"), "penv_archive", "/nonexistent/env.tar.gz",
     "existing archive"),
    (dict(cluster_mode="local", master="spark://h:7077"), "master", "spark://h:7077", "local["),
    (dict(cluster_mode="standalone", master="yarn"), "master", "'yarn'", "spark://host:port"),
    (dict(cluster_mode="k8s-client", container_image="img"), "master", "None", "k8s://"),
    (dict(cluster_mode="k8s-cluster", master="k8s://https://1.2.3.4:6443"), "container_image",
     "None", "Spark image"),
    (dict(redirect_spark_log="  "), "redirect_spark_log", "'  '", "path of the log file"),
    (dict(redirect_spark_log=1), "redirect_spark_log", "1", "True, False"),
    (dict(spark_log_level="LOUD"), "spark_log_level", "'LOUD'", "WARN"),
])
def test_bad_input_is_refused_before_anything_starts(kwargs, name, bad, accepted):
    with pytest.raises(InvalidArgumentError) as err:
        init_orca_context(**kwargs)
    msg = str(err.value)
    assert msg.startswith(name) or f"{name}=" in msg
    assert bad.strip("'") in msg
    assert accepted in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, OrcaError)
    assert _no_jvm()


def test_yarn_without_hadoop_conf_is_refused(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    with pytest.raises(InvalidArgumentError, match="hadoop_conf.*HADOOP_CONF_DIR"):
        init_orca_context(cluster_mode="yarn-client")
    with pytest.raises(InvalidArgumentError, match="hadoop_conf='/no/such/dir'.*existing"):
        init_orca_context(cluster_mode="yarn", hadoop_conf="/no/such/dir")
    assert _no_jvm()


def test_unknown_kwargs_are_named():
    with pytest.raises(UnknownArgumentError) as err:
        init_orca_context(cores=1, exector_memory="2g", foo=1)
    assert "exector_memory, foo" in str(err.value)
    assert "extra_python_lib" in str(err.value)  # lists what is accepted
    assert isinstance(err.value, TypeError)


def test_error_classes_subclass_builtins():
    from sparkorca import errors
    assert issubclass(errors.StartupTimeoutError, builtins.TimeoutError)
    assert issubclass(errors.OrcaRuntimeError, builtins.RuntimeError)
    assert issubclass(errors.JavaError, errors.OrcaError)


def test_memory_parsing():
    assert parse_memory("memory", "2g") == 2 << 30
    assert parse_memory("memory", "512M") == 512 << 20
    assert parse_memory("memory", "1t") == 1 << 40


def test_cluster_mode_resolution(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("SPARKORCA_CLUSTER_MODE", raising=False)
    assert build_spec().cluster_mode == "local"
    monkeypatch.setenv("SPARKORCA_CLUSTER_MODE", "local-cluster")
    assert build_spec().cluster_mode == "local-cluster"
    monkeypatch.delenv("SPARKORCA_CLUSTER_MODE")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1234")
    assert build_spec().cluster_mode == "spark-submit"
    assert build_spec(cluster_mode="yarn", hadoop_conf="/").cluster_mode == "yarn-client"
    assert build_spec(cluster_mode="k8s", master="k8s://https://a:1",
                      container_image="i").cluster_mode == "k8s-client"


@pytest.mark.parametrize("flag, good, bad, accepted", [
    ("log_output", True, "yes", "True or False"),
    ("barrier_mode", False, 1, "True or False"),
    ("serialize_data_creator", True, None, "True or False"),
    ("pandas_read_backend", "pandas", "polars", "'spark' or 'pandas'"),
    ("train_data_store", "DISK_2", "DISK_0", "'DRAM' or 'DISK_n'"),
    ("train_data_store", "DRAM", "SSD", "'DRAM' or 'DISK_n'"),
    ("shard_size", 1000, 0, "positive integer or None"),
])
def test_flags_are_validated_on_assignment(flag, good, bad, accepted):
    setattr(OrcaContext, flag, good)
    assert getattr(OrcaContext, flag) == good
    with pytest.raises(InvalidArgumentError) as err:
        setattr(OrcaContext, flag, bad)
    assert f"OrcaContext.{flag}={bad!r}" in str(err.value)
    assert accepted in str(err.value)
    assert getattr(OrcaContext, flag) == good  # a refused value changes nothing


def test_flag_defaults():
    assert OrcaContext.log_output is False
    assert OrcaContext.barrier_mode is True
    assert OrcaContext.serialize_data_creator is False
    assert OrcaContext.pandas_read_backend == "spark"
    assert OrcaContext.train_data_store == "DRAM"
    assert OrcaContext.shard_size is None
    assert OrcaContext.eager_mode is False


def test_orca_spellings_are_the_same_flags_and_a_misspelt_flag_is_refused():
    from sparkorca import UnknownFlagError
    OrcaContext._shard_size = 7
    OrcaContext._eager_mode = True
    assert (OrcaContext.shard_size, OrcaContext.eager_mode) == (7, True)
    with pytest.raises(InvalidArgumentError, match="eager_mode='yes' .*True or False"):
        OrcaContext._eager_mode = "yes"
    with pytest.raises(UnknownFlagError, match="no flag 'shard_sise'.*shard_size"):
        OrcaContext.shard_sise = 10
    assert not hasattr(OrcaContext, "shard_sise")


def test_k8s_modes_name_every_missing_requirement():
    with pytest.raises(InvalidArgumentError) as err:
        init_orca_context(cluster_mode="k8s-client")
    msg = str(err.value)
    assert "master=None" in msg and "container_image=None" in msg
    assert _no_jvm()


def test_redirected_driver_output_keeps_only_errors_on_the_console(tmp_path, capfd):
    """redirect_spark_log: every line to the file; on the console only error records
    (with their stack traces) and output that is not a log record."""
    import os

    from sparkorca.spark.logs import OutputPump
    log = tmp_path / "spark.log"
    pump = OutputPump("test", to_stdout=False, log_file=str(log))
    lines = ["Setting default log level to \"WARN\".\n",                        # console
             "26/11/23 10:00:00 INFO DAGScheduler: Job 0 finished\n",
             "26/11/23 10:00:01 WARN TaskSetManager: Lost task 0.0: Traceback:\n",
             "ZeroDivisionError: division by zero\n",                          # its trace
             "\r[Stage 0:>    (0 + 1) / 1]\r26/11/23 10:00:02 ERROR Executor: task 0.0\n",
             "org.apache.spark.api.python.PythonException: boom\n",            # console
             "\tat org.apache.spark.Foo.bar(Foo.scala:1)\n",                   # console
             "26/11/23 10:00:03 INFO SparkContext: Successfully stopped SparkContext\n",
             "a print from a Python worker\n",                                 # console
             "Exception in thread \"main\" java.lang.OutOfMemoryError\n"]      # console
    assert pump.write_fd is not None
    os.write(pump.write_fd, "".join(lines).encode())
    pump.join()
    assert log.read_bytes() == "".join(lines).encode()  # bytes: read_text turns \r to \n
    console = "".join([lines[0]] + lines[4:7] + lines[8:])
    assert capfd.readouterr().err.replace("\r", "\n") == console.replace("\r", "\n")


def test_spark_connect_takes_an_sc_url_and_refuses_what_the_server_owns(monkeypatch):
    monkeypatch.delenv("SPARK_REMOTE", raising=False)
    spec = build_spec("spark-connect", master="sc://localhost:15002")
    assert spec.cluster_mode == "spark-connect" and spec.master == "sc://localhost:15002"
    with pytest.raises(InvalidArgumentError, match=r"master=None.*sc://host:15002"):
        build_spec("spark-connect")
    with pytest.raises(InvalidArgumentError, match=r"master='local\[2\]'"):
        build_spec("spark-connect", master="local[2]")
    with pytest.raises(InvalidArgumentError) as e:
        build_spec("spark-connect", master="sc://h:1", driver_memory="4g",
                   env={"A": "1"}, hadoop_user_name="me")
    assert [x.name for x in e.value.errors] == ["driver_memory", "env", "hadoop_user_name"]
    assert "the Connect server started the application's JVMs" in str(e.value)


def test_spark_remote_in_the_environment_picks_spark_connect(monkeypatch):
    monkeypatch.delenv("SPARKORCA_CLUSTER_MODE", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("SPARK_REMOTE", "sc://server:15002")
    spec = build_spec()
    assert (spec.cluster_mode, spec.master) == ("spark-connect", "sc://server:15002")
    assert build_spec("local").cluster_mode == "local"  # an explicit mode wins

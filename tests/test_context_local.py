"""Real pyspark on local and local-cluster masters: lifecycle, adoption, flags, output."""

import os
import sys
import warnings

import pytest
from conftest import QUIET

from sparkorca import (
    InvalidArgumentError,
    NoContextError,
    OrcaContext,
    OrcaRuntimeError,
    init_orca_context,
    orca_context,
    stop_orca_context,
)

pytestmark = pytest.mark.engine


def test_local_run_stop_and_init_again():
    sc = init_orca_context(cluster_mode="local", cores=2, memory="1g", conf=QUIET)
    assert sc.master == "local[2]"
    assert sc.parallelize(range(100), 4).map(lambda x: x * 2).sum() == 9900
    # executors run the driver's own interpreter, not whatever "python3" is on PATH
    assert sc.parallelize([0], 1).map(lambda _: __import__("sys").executable).first() == \
        sys.executable
    gateway_pid = sc._gateway.proc.pid
    stop_orca_context()
    stop_orca_context()  # twice is harmless
    import psutil
    assert not psutil.pid_exists(gateway_pid), "the driver JVM outlived stop_orca_context"
    with pytest.raises(NoContextError, match="init_orca_context"):
        OrcaContext.get_spark_context()
    sc = init_orca_context(cluster_mode="local", cores=1, conf=QUIET)
    assert sc.parallelize([1, 2, 3]).count() == 3
    assert OrcaContext.get_spark_context() is sc
    df = OrcaContext.get_spark_session().range(10)
    assert df.count() == 10
    assert OrcaContext.get_sql_context().sql("select 1 as one").first().one == 1


def _mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as f:
        return f.read()


def test_class_archives_are_written_at_a_stop_and_mapped_after(tmp_path, monkeypatch):
    import glob

    import psutil

    from sparkorca.spark.class_data import plan_for_launch
    from sparkorca.spark.java import check_java
    monkeypatch.setenv("SPARKORCA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SPARKORCA_CLASS_DATA_SHARING_EXECUTORS", raising=False)  # on by default
    cds = tmp_path / "cds"
    # as on a machine that started Spark once before: the first start only leaves a marker
    assert plan_for_launch("local-cluster[1,1,1024]", {}, *check_java(), str(cds)) == []

    def cmdline(p):
        try:
            return p.cmdline()
        except psutil.Error:  # a short-lived child, gone or a zombie
            return []

    def jvms(sc):
        driver = psutil.Process(sc._gateway.proc.pid)
        executors = [p for p in driver.children(recursive=True)
                     if "CoarseGrainedExecutorBackend" in " ".join(cmdline(p))]
        return driver, executors

    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=1, cores=1, memory="1g",
                           conf=QUIET)
    assert sc.parallelize([1, 2]).count() == 2
    driver, executors = jvms(sc)
    assert len(executors) == 1
    assert any(a.startswith(f"-XX:ArchiveClassesAtExit={cds}/driver-") for a in cmdline(driver))
    assert any(a.startswith(f"-XX:ArchiveClassesAtExit={cds}/executor-")
               for a in cmdline(executors[0]))
    stop_orca_context()
    archives = sorted(os.path.basename(p) for p in glob.glob(str(cds / "*.jsa*")))
    assert [a.split("-")[0] for a in archives] == ["driver", "executor"], archives
    assert all(a.endswith(".jsa") for a in archives), "a dump was left unpublished"

    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=1, cores=1, memory="1g",
                           conf=QUIET)
    assert sc.parallelize([1, 2]).count() == 2
    driver, executors = jvms(sc)
    # the JVMs mapped the archives (a rejected archive is not mapped)
    assert str(cds / archives[0]) in _mapped_files(driver.pid)
    assert str(cds / archives[1]) in _mapped_files(executors[0].pid)
    stop_orca_context()
    assert sorted(os.path.basename(p) for p in glob.glob(str(cds / "*.jsa*"))) == archives


def test_local_cluster_executors_are_separate_processes():
    with orca_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                      conf=QUIET) as sc:
        assert sc.master == "local-cluster[2,1,1024]"
        pids = sc.parallelize(range(4), 4).map(lambda _: os.getppid()).distinct().collect()
        assert os.getpid() not in pids
    with pytest.raises(NoContextError):  # the with block stopped it
        OrcaContext.get_spark_context()


def test_conf_and_env_reach_driver_and_executors():
    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=1, cores=1, memory="1g",
                           conf={**QUIET, "spark.sql.shuffle.partitions": 3},
                           env={"SPARKORCA_TEST_SETTING": "on"})
    assert sc.getConf().get("spark.sql.shuffle.partitions") == "3"
    assert os.environ["SPARKORCA_TEST_SETTING"] == "on"
    seen = sc.parallelize([0], 1).map(
        lambda _: __import__("os").environ.get("SPARKORCA_TEST_SETTING")).first()
    assert seen == "on"
    stop_orca_context()
    assert "SPARKORCA_TEST_SETTING" not in os.environ  # restored at stop


def test_extra_python_lib_reaches_local_executors(tmp_path):
    lib = tmp_path / "sparkorca_extra_lib_mod.py"
    lib.write_text("def hello():\n    return 'from extra_python_lib'\n")
    sc = init_orca_context(cluster_mode="local-cluster", num_nodes=1, cores=1, memory="1g",
                           extra_python_lib=str(lib), conf=QUIET)
    out = sc.parallelize([0], 1).map(
        lambda _: __import__("sparkorca_extra_lib_mod").hello()).first()
    assert out == "from extra_python_lib"


def test_existing_context_is_adopted_with_a_warning_and_not_reconfigured():
    from pyspark import SparkConf, SparkContext
    own = SparkContext(conf=SparkConf().setMaster("local[1]").setAll(QUIET.items()))
    try:
        with pytest.warns(UserWarning, match="adopting the SparkContext"):
            sc = init_orca_context(cluster_mode="local", cores=2, memory="3g")
        assert sc is own
        assert sc.master == "local[1]"  # not silently reconfigured to local[2]
        with pytest.warns(UserWarning, match="already running"):
            assert init_orca_context() is own
        stop_orca_context()
        assert SparkContext._active_spark_context is own  # we did not start it
    finally:
        own.stop()
        from sparkorca.spark.session import end_gateway
        end_gateway()


def test_log_output_shows_executor_prints_and_logs_in_driver_stdout(capsys):
    OrcaContext.log_output = True

    def shout(_):
        import logging
        print("EXECUTOR-PRINT-MARKER")
        logging.getLogger("sparkorca-test").warning("EXECUTOR-LOG-MARKER")
        yield 1

    for mode in ("local", "local-cluster"):
        sc = init_orca_context(cluster_mode=mode, cores=1, num_nodes=1, memory="1g",
                               conf=QUIET)
        assert sc.parallelize([0], 1).mapPartitions(shout).collect() == [1]
        stop_orca_context()  # joins the output pumps: everything is flushed
        out = capsys.readouterr().out
        assert "EXECUTOR-PRINT-MARKER" in out, mode
        assert "EXECUTOR-LOG-MARKER" in out, mode


def test_without_log_output_executor_prints_stay_out_of_driver_stdout(capsys):
    sc = init_orca_context(cluster_mode="local-cluster", cores=1, memory="1g", conf=QUIET)
    sc.parallelize([0], 1).foreach(lambda _: print("QUIET-EXECUTOR-MARKER"))
    stop_orca_context()
    assert "QUIET-EXECUTOR-MARKER" not in capsys.readouterr().out


def test_setting_log_output_after_init_warns():
    init_orca_context(cluster_mode="local", cores=1, conf=QUIET)
    with pytest.warns(UserWarning, match="takes effect at the next init_orca_context"):
        OrcaContext.log_output = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OrcaContext.barrier_mode = False  # other flags do not warn


def test_failed_start_reports_the_jvm_output_and_leaves_nothing():
    with pytest.raises(OrcaRuntimeError) as err:
        # user conf passes through unvalidated, so the JVM itself refuses this heap size
        init_orca_context(cluster_mode="local", cores=1, conf={"spark.driver.memory": "lots"})
    assert "Invalid maximum heap size" in str(err.value)  # the tail of the JVM's own output
    from pyspark import SparkContext
    assert SparkContext._gateway is None
    # and the next start works
    sc = init_orca_context(cluster_mode="local", cores=1, conf=QUIET)
    assert sc.parallelize([1]).count() == 1


def test_get_ray_context_starts_ray_on_demand_and_stop_ends_it():
    import ray

    from sparkorca.ray import OrcaRayContext
    sc = init_orca_context(cluster_mode="local", cores=1, conf=QUIET)
    with pytest.raises(NoContextError, match="OrcaRayContext.get"):
        OrcaRayContext.get(initialize=False)
    ray_ctx = OrcaContext.get_ray_context()  # Orca's lazy start on the running app
    assert isinstance(ray_ctx, OrcaRayContext) and ray_ctx.initialized
    assert ray.get(ray.remote(lambda: 7).remote()) == 7
    assert OrcaContext.get_ray_context() is ray_ctx is OrcaRayContext.get(initialize=False)
    assert (ray_ctx.runtime, ray_ctx.num_ray_nodes, ray_ctx.ray_node_cpu_cores) == ("spark", 1, 1)
    ray_ctx.stop()  # Ray only: Spark goes on
    assert not ray.is_initialized() and not ray_ctx.initialized
    assert sc.parallelize([1, 2]).count() == 2
    info = ray_ctx.init()  # Orca's re-init: the same object, a new Ray
    assert ray_ctx.initialized and OrcaRayContext.get() is ray_ctx
    assert info["object_store_address"] and info["redis_address"] == ray_ctx.redis_address
    assert ray.get(ray.remote(lambda: 8).remote()) == 8
    stop_orca_context()
    assert not ray_ctx.initialized  # the program's handle knows its context ended
    with pytest.raises(NoContextError, match="init_orca_context"):
        ray_ctx.init()


def test_redirect_spark_log_sends_the_driver_log_to_a_file(tmp_path, capfd):
    with pytest.raises(InvalidArgumentError, match="redirect_spark_log=.*a file this process"):
        init_orca_context(cluster_mode="local", redirect_spark_log=str(tmp_path / "no" / "x"))
    log = tmp_path / "spark.log"
    sc = init_orca_context(cluster_mode="local", cores=1, conf=QUIET, redirect_spark_log=str(log))
    assert sc.parallelize(range(4), 2).count() == 4
    with pytest.raises(Exception, match="ZeroDivisionError"):
        sc.parallelize([1], 1).map(lambda x: x / 0).count()
    stop_orca_context()  # joins the driver's output pump: the file is complete
    text = log.read_text()
    assert " INFO DAGScheduler: Job 0 finished" in text  # INFO reaches the file
    assert " ERROR " in text and "ZeroDivisionError" in text
    console = capfd.readouterr().err
    assert " ERROR " in console and "ZeroDivisionError" in console
    assert " INFO " not in console and " WARN " not in console


def test_failed_context_creation_ends_the_jvm_it_started():
    with pytest.raises(OrcaRuntimeError, match="creating the SparkContext") as err:
        init_orca_context(cluster_mode="local", master="local[many]", conf=QUIET)
    assert "local[many]" in str(err.value)
    from pyspark import SparkContext
    assert SparkContext._gateway is None

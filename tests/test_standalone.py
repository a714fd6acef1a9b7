"""A real standalone master + workers on 127.0.0.1: joining, starting our own, shipping."""

import importlib.util

import psutil
import pytest
from conftest import MARKER_MODULE, QUIET

from sparkorca import OrcaRuntimeError, init_orca_context, stop_orca_context
from sparkorca.context import running_context

pytestmark = pytest.mark.engine


def test_join_an_existing_standalone_cluster(standalone_cluster):
    sc = init_orca_context(cluster_mode="standalone", master=standalone_cluster.master_url,
                           num_nodes=2, cores=1, memory="1g", conf=QUIET)
    assert sc.master == standalone_cluster.master_url
    # executors register a moment after the context starts: a job started before the
    # second one would run on the first alone
    from sparkorca.spark.session import wait_for_executors
    wait_for_executors(sc, 2, 60, "running the probe job")
    hosts = sc.parallelize(range(4), 4).map(lambda _: __import__("os").getcwd()).collect()
    # two executors, each running in its own work dir under the workers' root
    assert len({h.rsplit("/", 1)[-1] for h in hosts}) == 2
    assert all(h.startswith(standalone_cluster.root) for h in hosts)


def test_shipped_env_and_extra_python_lib_reach_standalone_executors(
        standalone_cluster, small_env_archive, tmp_path):
    """The YARN/K8s shipping path (spark.archives + PYSPARK_PYTHON), run for real."""
    assert importlib.util.find_spec(MARKER_MODULE) is None, "must exist only in the archive"
    lib = tmp_path / "sparkorca_extra_lib_standalone.py"
    lib.write_text("VALUE = 'from extra_python_lib'\n")
    sc = init_orca_context(cluster_mode="standalone", master=standalone_cluster.master_url,
                           num_nodes=2, cores=1, memory="1g", penv_archive=small_env_archive,
                           extra_python_lib=str(lib), conf=QUIET)

    def probe(_):
        import sys
        marker = __import__(MARKER_MODULE)
        extra = __import__("sparkorca_extra_lib_standalone")
        yield sys.executable, marker.WHERE, extra.VALUE

    rows = sc.parallelize(range(2), 2).mapPartitions(probe).collect()
    assert len(rows) == 2
    for executable, where, extra in rows:
        assert executable.endswith("/python_env/bin/python")
        assert executable.startswith(standalone_cluster.root)
        assert where == "inside the shipped archive"
        assert extra == "from extra_python_lib"


def test_standalone_without_master_starts_and_stops_its_own_cluster():
    sc = init_orca_context(cluster_mode="standalone", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)
    cluster = running_context().standalone
    assert sc.master == cluster.master_url and sc.master.startswith("spark://127.0.0.1:")
    assert sc.parallelize(range(10), 2).sum() == 45
    pids = cluster.pids()
    assert len(pids) == 3 and all(psutil.pid_exists(p) for p in pids)
    stop_orca_context()
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids)


def test_failed_start_stops_the_cluster_it_started():
    # The leak check fails this test if the master or workers outlive the error.
    with pytest.raises(OrcaRuntimeError, match="Invalid maximum heap size"):
        init_orca_context(cluster_mode="standalone", num_nodes=1, cores=1, memory="1g",
                          conf={"spark.driver.memory": "lots"})

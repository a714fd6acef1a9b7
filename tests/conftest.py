"""Shared fixtures: leak checks after every test, a real standalone cluster, a shipped env."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tempfile

import psutil
import pytest

from sparkorca import OrcaContext, StartupTimeoutError, init_orca_context, stop_orca_context
from sparkorca._wait import wait_for
from sparkorca.spark.java import spark_home
from sparkorca.spark.pyenv import cache_dir, pack_environment
from sparkorca.spark.session import wait_for_executors
from sparkorca.spark.standalone import LocalStandaloneCluster

# The suite's JVMs are short-lived and share two cores: C2 compiles and parallel GC
# threads cost them more than they give back (a cold local-cluster CSV read: 26 s ->
# 17 s). Every JVM the tests start, in subprocesses too, reads this variable.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
# Programs the tests run get a HOME of their own; they share this process's cache
# (packed environments, the JVMs' class archives) as a user's programs would.
os.environ.setdefault("SPARKORCA_CACHE_DIR", cache_dir())

# What identifies a process started by Spark or by us.
ENGINE_MARKERS = ("org.apache.spark", "pyspark.daemon", "pyspark.worker",
                  "sparkorca_log_daemon", "sparkorca.ray.node_runner", "sparkorca._reaper",
                  "sparkorca.cluster.node", "tensorboard.main", "/site-packages/ray/",
                  "ray.scripts.scripts", "sparkorca.ray.ray_start", "ray.util.client",
                  "ray::")
# TF autograph sources and TensorBoard's info dir: left when a process that made them
# ends with os._exit (pyspark's workers, our nodes) unless its temp files were redirected
TEMP_PATTERNS = ("spark-*", "sparkorca-*", "blockmgr-*", "pyspark-*", "ray", "ray_*",
                 "__autograph_generated_file*", ".tensorboard-info")
QUIET = {"spark.ui.showConsoleProgress": "false", "spark.ui.enabled": "false"}


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true",
                     help="also run the tests marked slow (minutes each; not in CI's run)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def engine_processes() -> dict:
    found = {}
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if any(m in cmd for m in ENGINE_MARKERS):
            found[p.info["pid"]] = cmd[:300]
    return found


def temp_entries() -> set:
    root = tempfile.gettempdir()
    found = {os.path.join(root, n) for n in os.listdir(root)
             if any(fnmatch.fnmatch(n, pat) for pat in TEMP_PATTERNS)}
    # Spark's default work dir for local-cluster executors is inside the install.
    work = os.path.join(spark_home(), "work")
    if os.path.isdir(work):
        found |= {os.path.join(work, n) for n in os.listdir(work)}
    return found


def leftovers(before_procs: dict, before_temps: set):
    procs = {pid: cmd for pid, cmd in engine_processes().items() if pid not in before_procs}
    temps = temp_entries() - before_temps
    return procs, temps


# Spark's own Python workers, and the actors Ray Data starts once per Ray cluster:
# they stay between jobs and end with their context.
SPARK_WORKERS = ("pyspark.daemon", "pyspark.worker", "sparkorca_log_daemon",
                 "ray::_StatsActor", "ray::_AutoscalingCoordinatorActor")


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves an engine process or temp dir behind (30 s grace).

    A test on a module's shared context (``shared_sc``) leaves that context running;
    what it started itself (TFClusters, node processes, temp dirs) must still go.
    """
    # a module's Spark (or Spark Connect server) outlives the test; its Python workers too
    shared = any(name in request.fixturenames for name in ("shared_sc", "connect_server"))
    if not shared:
        stop_orca_context()  # one kept up for a module that shares the same one
    before_procs, before_temps = engine_processes(), temp_entries()
    yield
    if not shared:
        stop_orca_context()
    OrcaContext.reset_flags()

    def left():
        procs, temps = leftovers(before_procs, before_temps)
        if shared:
            procs = {p: c for p, c in procs.items() if not any(w in c for w in SPARK_WORKERS)}
        return procs, temps
    try:
        wait_for(lambda: not any(left()), 30,
                 "engine processes and temp dirs of the test to go away")
    except StartupTimeoutError:
        procs, temps = left()
        pytest.fail(f"test left behind processes {procs} and temp entries {sorted(temps)}")


_kept: dict = {}  # the arguments of the shared context that is up, if one is


def shared_context(**kwargs):
    """A module-scoped context fixture: one Spark application for a module's tests.

    It stays up for the next module that asks for the same arguments (the
    TensorFlow modules share one, and its Python workers keep TF imported); a test
    that does not share it, another module's arguments or the session's end stop it
    (checked by the next test's leak check)."""
    @pytest.fixture(scope="module")
    def shared_sc():
        if _kept.get("kwargs") == kwargs and _running():
            yield OrcaContext.get_spark_context()
            return
        stop_orca_context()
        _kept["kwargs"] = kwargs
        sc = init_orca_context(**kwargs)
        # Executors come up after init returns; a JVM spawned after a test's leak
        # snapshot would read as that test's leftover.
        wait_for_executors(sc, kwargs.get("num_nodes", 1), 120, "the module's first test")
        yield sc
    return shared_sc


def _running() -> bool:
    try:
        return OrcaContext.get_spark_context()._jsc is not None
    except Exception:  # no context, or a Ray-only one
        return False


@pytest.fixture(scope="session", autouse=True)
def _stop_the_kept_context():
    yield
    stop_orca_context()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, scaled to [0, 1]: x_train, x_test, y_train, y_test."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    return train_test_split((x / 16.0).astype(np.float64), y, test_size=0.25, random_state=0)


@pytest.fixture(scope="module")
def frames(shared_sc, digits):
    """The digits as cached DataFrames (id, features array<double>, label) on the
    module's shared context: train in three partitions (uneven for two workers),
    test in two."""
    spark = OrcaContext.get_spark_session()
    x_train, x_test, y_train, y_test = digits

    def frame(x, y, parts):
        rows = [(i, x[i].tolist(), int(y[i])) for i in range(len(y))]
        return spark.createDataFrame(rows, "id long, features array<double>, label long") \
            .repartition(parts).cache()
    return frame(x_train, y_train, 3), frame(x_test, y_test, 2)


@pytest.fixture(scope="session")
def standalone_cluster():
    """A real Spark standalone master and two 1-core workers on 127.0.0.1."""
    cluster = LocalStandaloneCluster(num_workers=2, cores=1, memory_mb=1024).start()
    yield cluster
    cluster.stop()


MARKER_MODULE = "sparkorca_shipped_marker"


@pytest.fixture(scope="session")
def small_env_archive(tmp_path_factory):
    """A venv that holds a module found nowhere else, packed with venv-pack.

    Executors need nothing else from it: Spark puts its own pyspark.zip on the
    workers' PYTHONPATH.
    """
    root = tmp_path_factory.mktemp("penv")
    prefix = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next(prefix.glob("lib/python*/site-packages"))
    (site / f"{MARKER_MODULE}.py").write_text("WHERE = 'inside the shipped archive'\n")
    return pack_environment(str(prefix), output=str(root / "small-env.tar.gz"))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spark_submit_example(name, cwd, master, *args):
    """``examples/name`` launched by spark-submit on ``master`` as TFoS programs run (a
    plain SparkContext), in ``cwd`` with HOME there; the finished process.

    A plain SparkContext on local-cluster leaves its executors' work dir in the Spark
    install (Spark's behaviour; init_orca_context removes it): not ours to keep."""
    import shutil

    from sparkorca.spark.java import spark_home, spark_submit
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, HOME=str(cwd))
    work = os.path.join(spark_home(), "work")
    before = set(os.listdir(work)) if os.path.isdir(work) else set()
    try:
        return subprocess.run(
            [spark_submit(), "--master", master, "--conf", "spark.ui.enabled=false",
             "--conf", "spark.ui.showConsoleProgress=false",
             os.path.join(ROOT, "examples", name), *map(str, args)],
            capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    finally:
        for entry in set(os.listdir(work)) - before if os.path.isdir(work) else ():
            shutil.rmtree(os.path.join(work, entry), ignore_errors=True)

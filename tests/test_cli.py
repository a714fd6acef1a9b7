"""The sparkorca command on this machine."""

import importlib.metadata
import subprocess
import sys

import pytest

from sparkorca import __version__
from sparkorca.spark.java import check_java


def _run(*args):
    return subprocess.run([sys.executable, "-m", "sparkorca.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_version():
    out = _run("version")
    assert out.returncode == 0 and out.stdout.strip() == __version__


def test_doctor_reports_this_machine():
    out = _run("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    _, java_version = check_java()
    assert f"Java       {java_version}" in out.stdout
    assert f"pyspark {importlib.metadata.version('pyspark')}" in out.stdout
    assert "status     ready" in out.stdout
    for name in ("Ray", "TensorFlow", "PyTorch"):
        assert name in out.stdout


def test_doctor_says_what_is_missing(tmp_path):
    import os
    env = dict(os.environ, JAVA_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "sparkorca.cli", "doctor"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "Java       MISSING" in out.stdout and "install Java 17" in out.stdout


@pytest.mark.engine
def test_demo_runs_the_parameter_server_on_local_mode():
    out = _run("demo", "--cores", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    # a local master's one executor is the driver: the head is its Ray node
    assert "inside Spark local[2]: 1 Ray node(s)" in out.stdout
    assert "parameters after 41 async updates" in out.stdout
    assert "Spark sum(0..999) = 499500" in out.stdout

"""The examples run as programs on local and local-cluster masters."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_example(name, tmp_path, *args):
    # HOME in tmp: Ray Tune writes its results under ~/ray_results
    env = dict(os.environ, HOME=str(tmp_path))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_ray_called_from_a_spark_pandas_udf(tmp_path):
    out = _run_example("ray_in_pandas_udf.py", tmp_path, "--cluster-mode", "local-cluster")
    assert "sum of scores computed by Ray from Spark: 1498500" in out


def test_ray_tune_grid_search(tmp_path):
    pytest.importorskip("ray.tune")
    out = _run_example("ray_tune_grid_search.py", tmp_path)
    assert "best config: {'lr': 0.01, 'momentum': 0.9}" in out

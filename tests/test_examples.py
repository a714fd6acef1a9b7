"""The examples run as programs on local and local-cluster masters."""

import os
import subprocess
import sys

import pytest
from conftest import spark_submit_example

pytestmark = pytest.mark.engine

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


def test_tfos_style_program_runs_with_imports_changed_only(tmp_path):
    """A TensorFlowOnSpark program (DataFeed loop with next_batch, should_stop,
    terminate and batch_results), launched by spark-submit on a plain SparkContext."""
    out = spark_submit_example("tfos_linear_regression.py", tmp_path, "local-cluster[2,1,1024]",
                               "--model_dir", tmp_path / "model", "--epochs", "3")
    assert out.returncode == 0, out.stderr[-4000:]
    assert "predictions: 1000 for 1000 rows" in out.stdout
    error = float(out.stdout.split("max error ")[1].split()[0])
    assert error < 0.1, out.stdout


def test_orca_pytorch_estimator_program_runs_with_imports_changed_only(tmp_path):
    pytest.importorskip("torch")
    out = _run_example("orca_pytorch_estimator.py", tmp_path)
    assert "epoch 5:" in out and "evaluate: {'Accuracy':" in out
    accuracy = float(out.split("holdout accuracy ")[1].split()[0])
    assert accuracy >= 0.9, out


def test_orca_keras_estimator_program_runs_with_imports_changed_only(tmp_path):
    """Creators of tf.data datasets, Orca's step counts, two workers."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    out = _run_example("orca_keras_estimator.py", tmp_path, "--cluster-mode", "local-cluster")
    assert "evaluate: {'validation_loss':" in out and "saved: ['digits.keras']" in out
    val_accuracy = float(out.split("'validation_accuracy': ")[1].split("}")[0])
    assert val_accuracy >= 0.9, out
    # evaluate read num_steps=7 batches of 64 (448 rows), predict all 450
    accuracy = float(out.split("holdout accuracy ")[1].split()[0])
    assert accuracy == pytest.approx(val_accuracy, abs=0.01), out


@pytest.mark.slow
def test_rllib_ppo_cartpole_reaches_a_low_reward_target(tmp_path):
    """RLlib (pip install -e '.[test,rllib]') tuning PPO inside Spark: three trials;
    a reward of 30 is above a random policy's ~22."""
    pytest.importorskip("ray.rllib", reason="needs the rllib extra: pip install '.[rllib]'")
    out = _run_example("rllib_ppo_cartpole.py", tmp_path, "--target-reward", "30")
    assert float(out.split("episode return: ")[1].split()[0]) >= 30, out

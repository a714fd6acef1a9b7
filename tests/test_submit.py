"""spark-submit mode for real, and the exit code of a resubmitted program."""

import os
import subprocess
import sys
import textwrap

import pytest

from sparkorca.spark.java import spark_submit
from sparkorca.spark.submit import run_spark_submit

pytestmark = pytest.mark.engine

PROGRAM = textwrap.dedent("""
    import warnings
    from sparkorca import init_orca_context, stop_orca_context
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sc = init_orca_context(cluster_mode=MODE, cores=4, conf={"spark.foo": "bar"})
    print("MASTER", sc.master)
    print("CONF", sc.getConf().get("spark.foo", "unset"))
    print("WARNED", any("spark-submit already configured" in str(w.message) for w in caught))
    print("SUM", sc.parallelize(range(10), 2).sum())
    stop_orca_context()
""")


def _env():
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("SPARKORCA_CLUSTER_MODE", None)
    return env


def _submit(tmp_path, mode_literal):
    script = tmp_path / "program.py"
    script.write_text(f"MODE = {mode_literal}\n" + PROGRAM)
    out = subprocess.run(
        [spark_submit(), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         str(script)], capture_output=True, text=True, env=_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_spark_submit_mode_adopts_what_spark_submit_configured(tmp_path):
    out = _submit(tmp_path, "'spark-submit'")
    assert "MASTER local[1]" in out  # spark-submit's master, not cores=4
    assert "CONF unset" in out  # conf ignored...
    assert "WARNED True" in out  # ...with a warning
    assert "SUM 45" in out


def test_cluster_mode_none_detects_spark_submit(tmp_path):
    out = _submit(tmp_path, "None")
    assert "MASTER local[1]" in out and "SUM 45" in out


def test_resubmitted_program_exit_code_is_propagated(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("import sys\nsys.exit(3)\n")
    argv = [spark_submit(), "--master", "local[1]", str(script)]
    assert run_spark_submit(argv, {"PYSPARK_PYTHON": sys.executable}) == 3

"""Class-data sharing plans for Spark's JVMs: pure logic, files only (no JVM)."""

import os

import pytest

from sparkorca.spark import class_data
from sparkorca.spark.class_data import MAGIC, ClassData, plan_class_data, plan_for_launch
from sparkorca.spark.conf import SparkLaunch

JAVA = ("/usr/bin/java", "17.0.15")


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch, tmp_path):
    monkeypatch.delenv(class_data.SWITCH_ENV, raising=False)
    for name in class_data.JVM_OPTION_ENVS:  # the suite's own JAVA_TOOL_OPTIONS included
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "no-conf"))


def _launch(conf=None, env=None):
    return SparkLaunch(master="local-cluster[2,1,1024]", deploy_mode="client",
                       conf=dict(conf or {}), driver_env=dict(env or {}), python_exec="python")


def test_the_key_follows_what_the_jvm_checks(tmp_path):
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "spark-core.jar").write_bytes(b"x" * 10)
    key = class_data.archive_key(*JAVA, str(jars), "")
    assert key == class_data.archive_key(*JAVA, str(jars), "")
    assert key != class_data.archive_key("/usr/bin/java", "21.0.1", str(jars), "")
    assert key != class_data.archive_key(*JAVA, str(jars), "/opt/extra.jar")
    (jars / "spark-core.jar").write_bytes(b"x" * 11)  # an upgraded jar
    assert key != class_data.archive_key(*JAVA, str(jars), "")


def test_first_start_is_plain_the_second_dumps_later_ones_map(tmp_path):
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path)) is None  # leaves a marker
    assert [p.suffix for p in tmp_path.iterdir()] == [".seen"]
    driver = plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert driver.dump_to == f"{driver.archive}.{os.getpid()}.tmp"
    assert driver.java_options().startswith(f"-XX:ArchiveClassesAtExit={driver.dump_to} ")
    executor = _second_plan("executor", {}, tmp_path)
    assert executor.dump_to.endswith("-{{EXECUTOR_ID}}.tmp")  # one file per executor JVM
    with open(driver.archive, "wb") as f:
        f.write(MAGIC)
    mapped = plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert mapped == ClassData("driver", driver.archive)
    assert mapped.java_options() == f"-XX:SharedArchiveFile={driver.archive} {class_data.QUIET}"


def _second_plan(role, conf, directory):
    """The plan of a start after the first (which only leaves its marker)."""
    plan_class_data(role, conf, *JAVA, str(directory))
    return plan_class_data(role, conf, *JAVA, str(directory))


def test_options_join_the_users_and_theirs_win(tmp_path, monkeypatch):
    conf = {"spark.driver.extraJavaOptions": "-Dx=1", "spark.executor.extraJavaOptions": "-Dy=2"}
    driver = _second_plan("driver", conf, tmp_path)
    # the driver's through spark-submit's environment: spark-defaults.conf keeps its
    # spark.driver.extraJavaOptions (a --conf would replace it)
    launch = driver.applied_to(_launch(conf, {"SPARK_SUBMIT_OPTS": "-Dz=3"}))
    assert launch.conf == conf
    assert launch.driver_env["SPARK_SUBMIT_OPTS"] == f"-Dz=3 {driver.java_options()}"
    executor = _second_plan("executor", conf, tmp_path)
    launch = executor.applied_to(_launch(conf))
    assert launch.conf["spark.executor.extraJavaOptions"] == f"-Dy=2 {executor.java_options()}"
    for own in ("-Xshare:off", "-XX:SharedArchiveFile=/mine.jsa"):
        assert plan_class_data("driver", {"spark.driver.extraJavaOptions": own},
                               *JAVA, str(tmp_path)) is None
        monkeypatch.setenv("JAVA_TOOL_OPTIONS", own)
        assert plan_class_data("executor", {}, *JAVA, str(tmp_path)) is None
        monkeypatch.delenv("JAVA_TOOL_OPTIONS")
    # Spark splits java options on whitespace: a cache path with a space is left out
    assert _second_plan("driver", {}, tmp_path / "my cache") is None
    monkeypatch.setenv(class_data.SWITCH_ENV, "0")
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path)) is None
    assert plan_for_launch("local[2]", {}, *JAVA, str(tmp_path)) == []


def test_executors_share_archives_only_on_local_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv(class_data.EXECUTORS_ENV, raising=False)
    plan_for_launch("local-cluster[2,1,1024]", {}, *JAVA, str(tmp_path))
    roles = [c.role for c in plan_for_launch("local-cluster[2,1,1024]", {}, *JAVA, str(tmp_path))]
    assert roles == ["driver", "executor"]
    for master in ("local[2]", "spark://10.0.0.1:7077", "yarn"):
        assert [c.role for c in plan_for_launch(master, {}, *JAVA, str(tmp_path))] == ["driver"]
    monkeypatch.setenv(class_data.EXECUTORS_ENV, "0")  # the driver's only
    roles = [c.role for c in plan_for_launch("local-cluster[2,1,1024]", {}, *JAVA, str(tmp_path))]
    assert roles == ["driver"]


def test_a_class_path_the_jvm_cannot_dump_is_left_alone(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    monkeypatch.setenv("SPARK_CONF_DIR", str(conf_dir))
    assert _second_plan("driver", {}, tmp_path / "cds").dump_to  # empty: fine
    (conf_dir / "spark-defaults.conf.template").write_text("")  # a Spark distribution's
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path / "other")) is None
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path / "other")) is None
    assert not list((tmp_path / "other").glob("*"))  # not even a first start's marker
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path / "no-conf"))
    plan = _second_plan("driver", {}, tmp_path / "third")
    plan.publish()  # the JVM wrote nothing: not tried again
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path / "third")) is None


def test_an_unwritable_cache_starts_the_usual_way(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert plan_class_data("driver", {}, *JAVA, str(blocked / "cds")) is None


def test_publish_keeps_one_whole_dump_and_prunes(tmp_path):
    plan = _second_plan("executor", {}, tmp_path)
    cut_short = plan.dump_to.replace("{{EXECUTOR_ID}}", "0")
    whole = plan.dump_to.replace("{{EXECUTOR_ID}}", "1")
    open(cut_short, "wb").close()  # its JVM was killed mid-dump: no header
    with open(whole, "wb") as f:
        f.write(MAGIC + b"rest")
    plan.publish()
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(plan.archive),
                                                   os.path.basename(plan.archive)[:-4] + ".seen"])
    with open(plan.archive, "rb") as f:
        assert f.read() == MAGIC + b"rest"
    for i in range(3):  # older archives of other installs
        old = tmp_path / f"executor-old{i}.jsa"
        old.write_bytes(MAGIC)
        os.utime(old, (i, i))
    _second_plan("executor", {"spark.executor.extraClassPath": "/x.jar"}, tmp_path).publish()
    assert len(list(tmp_path.glob("executor-*.jsa"))) == class_data.KEEP


def test_dumps_of_dead_processes_are_removed(tmp_path):
    orphan = tmp_path / "driver-abc.jsa.999999999.tmp"
    orphan.write_bytes(b"partial")
    mine = tmp_path / f"driver-abc.jsa.{os.getpid()}.tmp"
    mine.write_bytes(b"partial")
    plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert not orphan.exists() and mine.exists()

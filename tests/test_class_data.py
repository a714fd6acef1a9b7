"""Class-data sharing plans for Spark's JVMs: pure logic, files only (no JVM)."""

import os

import pytest

from sparkorca.spark import class_data
from sparkorca.spark.class_data import MAGIC, ClassData, plan_class_data, plan_for_launch

JAVA = ("/usr/bin/java", "17.0.15")


@pytest.fixture(autouse=True)
def _switch_on(monkeypatch):
    monkeypatch.delenv(class_data.SWITCH_ENV, raising=False)


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


def test_first_start_dumps_later_ones_map(tmp_path):
    driver = plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert driver.dump_to == f"{driver.archive}.{os.getpid()}.tmp"
    assert driver.java_options().startswith(f"-XX:ArchiveClassesAtExit={driver.dump_to} ")
    executor = plan_class_data("executor", {}, *JAVA, str(tmp_path))
    assert executor.dump_to.endswith("-{{EXECUTOR_ID}}.tmp")  # one file per executor JVM
    with open(driver.archive, "wb") as f:
        f.write(MAGIC)
    mapped = plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert mapped == ClassData("driver", driver.archive)
    assert mapped.java_options() == f"-XX:SharedArchiveFile={driver.archive} {class_data.QUIET}"


def test_options_join_the_users_and_theirs_win(tmp_path, monkeypatch):
    conf = {"spark.driver.extraJavaOptions": "-Dx=1"}
    plan = plan_class_data("driver", conf, *JAVA, str(tmp_path))
    applied = plan.applied_to(conf)["spark.driver.extraJavaOptions"]
    assert applied == f"-Dx=1 {plan.java_options()}"
    for own in ("-Xshare:off", "-XX:SharedArchiveFile=/mine.jsa"):
        assert plan_class_data("driver", {"spark.driver.extraJavaOptions": own},
                               *JAVA, str(tmp_path)) is None
    monkeypatch.setenv(class_data.SWITCH_ENV, "0")
    assert plan_class_data("driver", {}, *JAVA, str(tmp_path)) is None
    assert plan_for_launch("local[2]", {}, *JAVA, str(tmp_path)) == []


def test_executors_share_archives_only_on_local_cluster(tmp_path):
    roles = [c.role for c in plan_for_launch("local-cluster[2,1,1024]", {}, *JAVA, str(tmp_path))]
    assert roles == ["driver", "executor"]
    for master in ("local[2]", "spark://10.0.0.1:7077", "yarn"):
        assert [c.role for c in plan_for_launch(master, {}, *JAVA, str(tmp_path))] == ["driver"]


def test_an_unwritable_cache_starts_the_usual_way(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert plan_class_data("driver", {}, *JAVA, str(blocked / "cds")) is None


def test_publish_keeps_one_whole_dump_and_prunes(tmp_path):
    plan = plan_class_data("executor", {}, *JAVA, str(tmp_path))
    cut_short = plan.dump_to.replace("{{EXECUTOR_ID}}", "0")
    whole = plan.dump_to.replace("{{EXECUTOR_ID}}", "1")
    open(cut_short, "wb").close()  # its JVM was killed mid-dump: no header
    with open(whole, "wb") as f:
        f.write(MAGIC + b"rest")
    plan.publish()
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(plan.archive)]
    with open(plan.archive, "rb") as f:
        assert f.read() == MAGIC + b"rest"
    for i in range(3):  # older archives of other installs
        old = tmp_path / f"executor-old{i}.jsa"
        old.write_bytes(MAGIC)
        os.utime(old, (i, i))
    plan_class_data("executor", {"spark.executor.extraClassPath": "/x.jar"}, *JAVA,
                    str(tmp_path)).publish()
    assert len(list(tmp_path.glob("executor-*.jsa"))) == class_data.KEEP


def test_dumps_of_dead_processes_are_removed(tmp_path):
    orphan = tmp_path / "driver-abc.jsa.999999999.tmp"
    orphan.write_bytes(b"partial")
    mine = tmp_path / f"driver-abc.jsa.{os.getpid()}.tmp"
    mine.write_bytes(b"partial")
    plan_class_data("driver", {}, *JAVA, str(tmp_path))
    assert not orphan.exists() and mine.exists()

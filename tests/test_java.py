"""Java missing or too old is reported before anything starts."""

import os
import stat

import pytest

from sparkorca import JavaError, init_orca_context
from sparkorca.spark.java import check_java


def _fake_java(tmp_path, version_line):
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return str(home)


def test_java_on_this_machine_is_found():
    java, version = check_java()
    assert os.access(java, os.X_OK)
    assert int(version.split(".")[0]) >= 17


def test_missing_java_is_an_error_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(JavaError, match="no-jdk has no bin/java.*install Java 17"):
        init_orca_context(cluster_mode="local", cores=1)
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaError, match="no java on PATH"):
        init_orca_context(cluster_mode="local", cores=1)


def test_old_java_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", _fake_java(tmp_path, 'openjdk version "1.8.0_392"'))
    with pytest.raises(JavaError, match=r"version 1\.8\.0_392, Spark needs Java >= 17"):
        init_orca_context(cluster_mode="standalone", num_nodes=1)
    from pyspark import SparkContext
    assert SparkContext._gateway is None


def test_java_11_is_too_old_and_21_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", _fake_java(tmp_path, 'openjdk version "11.0.2" 2019'))
    with pytest.raises(JavaError, match="11.0.2"):
        check_java()
    monkeypatch.setenv("JAVA_HOME", _fake_java(tmp_path / "b", 'openjdk version "21.0.1"'))
    assert check_java()[1] == "21.0.1"

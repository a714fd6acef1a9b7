"""Packing the environment with venv-pack, cached by a fingerprint of the env."""

import os
import subprocess
import sys
import tarfile

import pytest

from sparkorca import OrcaRuntimeError
from sparkorca.spark import pyenv


@pytest.fixture
def venv(tmp_path):
    prefix = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    return prefix


def test_pack_is_cached_until_the_env_changes(venv, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKORCA_CACHE_DIR", str(tmp_path / "cache"))
    assert pyenv.env_kind(str(venv)) == "venv"
    first = pyenv.pack_environment(str(venv))
    assert first.startswith(str(tmp_path / "cache")) and first.endswith(".tar.gz")
    with tarfile.open(first) as tar:
        assert "bin/python" in tar.getnames()
    stamp = os.stat(first).st_mtime_ns
    assert pyenv.pack_environment(str(venv)) == first
    assert os.stat(first).st_mtime_ns == stamp  # not packed again
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "newly_installed.py").write_text("")
    second = pyenv.pack_environment(str(venv))
    assert second != first  # installing something changes the fingerprint


def test_a_plain_python_cannot_be_packed(tmp_path):
    with pytest.raises(OrcaRuntimeError, match="neither a venv nor a conda.*penv_archive"):
        pyenv.pack_environment(str(tmp_path))


def test_conda_env_is_recognised(tmp_path):
    (tmp_path / "conda-meta").mkdir()
    assert pyenv.env_kind(str(tmp_path)) == "conda"

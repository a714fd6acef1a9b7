"""Where a process's temp files go once sparkorca has moved them (node.host): the
block's scratch dir, removed after, while node dirs stay in the original root."""

import os
import tempfile

from sparkorca.node.host import node_dir, scratch_tempdir, temp_root


def test_a_scratch_tempdir_takes_the_blocks_temp_files_and_goes_after(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("TMPDIR", raising=False)
    where = node_dir("tf", "c1", 0)
    with scratch_tempdir("sparkorca-test-") as path:
        assert os.path.dirname(path) == str(tmp_path)
        assert tempfile.gettempdir() == os.environ["TMPDIR"] == path
        with tempfile.NamedTemporaryFile(delete=False) as f:  # as TF's autograph does
            assert os.path.dirname(f.name) == path
        assert temp_root() == str(tmp_path)
        assert node_dir("tf", "c1", 0) == where  # other processes find it there
        with scratch_tempdir("sparkorca-inner-") as inner:  # nested: same root
            assert os.path.dirname(inner) == str(tmp_path)
        assert tempfile.gettempdir() == path
    assert not os.path.exists(path)
    assert tempfile.gettempdir() == str(tmp_path) and "TMPDIR" not in os.environ
    assert "SPARKORCA_TEMP_ROOT" not in os.environ


def test_a_scratch_tempdir_is_undone_when_the_block_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", "/somewhere")
    try:
        with scratch_tempdir("sparkorca-test-") as path:
            raise KeyError("map_fun failed")
    except KeyError:
        pass
    assert not os.path.exists(path)
    assert tempfile.tempdir == str(tmp_path) and os.environ["TMPDIR"] == "/somewhere"

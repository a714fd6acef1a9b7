"""The Spark -> Ray hand-off's driver side without engines: the Dataset is built from
what the holders report, with no task per block (``ray.data.from_arrow_refs``'s way)."""

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

from sparkorca.data import to_ray  # noqa: E402


def test_the_dataset_comes_from_the_holders_metadata_without_a_task(monkeypatch):
    def asks_each_block(refs):
        raise AssertionError("from_arrow_refs runs a task per block")
    monkeypatch.setattr(ray.data, "from_arrow_refs", asks_each_block)
    schema = pa.schema([("a", pa.int64()), ("b", pa.float64())])
    blob = schema.serialize().to_pybytes()
    refs = [ray.ObjectRef.from_random() for _ in range(2)]
    ds = to_ray.dataset_of([([refs[0]], 3, 48, blob), ([refs[1]], 4, 64, blob)])
    assert not ray.is_initialized()  # nothing ran: rows, blocks and schema are known
    assert ds.count() == 7 and ds.num_blocks() == 2
    assert ds.schema().names == ["a", "b"]
    meta = to_ray.block_metadata(3, 48, blob)
    assert (meta.num_rows, meta.size_bytes, meta.schema) == (3, 48, schema)


def test_a_block_missing_from_a_successful_task_fails_the_transfer():
    from sparkorca.errors import OrcaRuntimeError
    blocks = {("t", 0, 0, 0): None, ("t", 0, 0, 1): None, ("t", 1, 1, 0): None}
    to_ray._check_complete([(0, 0, 2), (1, 1, 1), (2, 0, 0)], blocks)  # an empty partition too
    with pytest.raises(OrcaRuntimeError, match="partition 0 put 3 blocks and 2 reached"):
        to_ray._check_complete([(0, 0, 3), (1, 1, 1)], blocks)
    with pytest.raises(OrcaRuntimeError, match="partition 1 put 1 blocks and 0 reached"):
        to_ray._check_complete([(1, 0, 1)], blocks)  # attempt 0's blocks are not attempt 1's

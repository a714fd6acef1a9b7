"""The train data store: what a node keeps of the first epoch to replay the rest
(``OrcaContext.train_data_store``).

"DRAM" keeps the node's record batches in memory. "DISK_n" writes them to ``n``
Arrow files on executor-local disk as they arrive (batch ``j`` into file ``j % n``)
and replays one file at a time, so about 1/n of the node's data is in memory.
"""

from __future__ import annotations

import os
import threading
from typing import Iterator, List, Optional, Union

import pyarrow as pa


def parse_store(value: str) -> int:
    """0 for DRAM, else the n of DISK_n (the flag was validated on assignment)."""
    return 0 if value.upper() == "DRAM" else int(value.upper()[len("DISK_"):])


class MemoryStore:
    def __init__(self):
        self._batches: List[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)

    def parts(self) -> Iterator[List[pa.RecordBatch]]:
        yield self._batches

    def close(self) -> None:
        self._batches = []


class DiskStore:
    def __init__(self, directory: str, n: int):
        os.makedirs(directory, exist_ok=True)
        self.paths = [os.path.join(directory, f"part-{i}.arrow") for i in range(n)]
        self._sinks: List[Optional[pa.NativeFile]] = [None] * n
        self._writers: List[Optional[pa.ipc.RecordBatchStreamWriter]] = [None] * n
        self._schemas: List[Optional[pa.Schema]] = [None] * n
        self._count = 0
        self._lock = threading.Lock()  # a node's partitions may arrive at once

    def add(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self._add(batch)

    def _add(self, batch: pa.RecordBatch) -> None:
        i = self._count % len(self.paths)
        self._count += 1
        writer = self._writers[i]
        if writer is not None and self._schemas[i] != batch.schema:
            self._close(i)  # a new schema starts a new stream in the same file
            writer = None
        if writer is None:
            self._sinks[i] = pa.OSFile(self.paths[i], "ab")
            writer = self._writers[i] = pa.ipc.new_stream(self._sinks[i], batch.schema)
            self._schemas[i] = batch.schema
        writer.write_batch(batch)

    def _close(self, i: int) -> None:
        writer, sink = self._writers[i], self._sinks[i]
        if writer is not None:
            assert sink is not None
            writer.close()
            sink.close()
            self._writers[i] = self._sinks[i] = None

    def parts(self) -> Iterator[List[pa.RecordBatch]]:
        """One file's batches at a time; the previous part is released first."""
        for i in range(len(self.paths)):
            self._close(i)
        for path in self.paths:
            if not os.path.exists(path):
                continue
            # Memory-mapped: a part's batches are views of its file, and its pages
            # leave memory when the part is released (an allocator would keep them).
            batches = []
            with pa.memory_map(path, "r") as f:
                while f.tell() < f.size():
                    batches.extend(pa.ipc.open_stream(f))
            yield batches
            del batches

    def close(self) -> None:
        for i in range(len(self.paths)):
            self._close(i)
        for path in self.paths:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def open_store(kind: str, directory: str) -> Union[MemoryStore, DiskStore]:
    n = parse_store(kind)
    return MemoryStore() if n == 0 else DiskStore(directory, n)

"""The node side of the InputMode.SPARK feed: a local socket that feeders (Spark
tasks on the same executor) stream Arrow record batches into, a bounded queue per
input name, and ``DataFeed``, the consumer API TensorFlowOnSpark programs use.

Backpressure: a connection's reader blocks while the queue holds ``QUEUE_BATCHES``
batches, so the socket fills and the feeder's send blocks; no side ever buffers a
whole partition. A feeder's partition is acknowledged once the consumer has taken
all its batches (TFoS's ``queue.join()``), and the ack is what ``feed_timeout``
bounds on the feeder side.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import queue
import socket
import threading
import time
from typing import Deque, Dict, List, Optional, Union

import pyarrow as pa

from ..errors import OrcaRuntimeError
from ..node.channel import Channel, serve_connections
from . import rows as rowcodec
from .store import DiskStore, MemoryStore, open_store

log = logging.getLogger(__name__)

QUEUE_BATCHES = 4
_POLL = 0.2  # how often a blocked queue put re-checks for terminate()

# Queue markers
END = "end"        # shutdown: the feed is over, should_stop() turns True
FLUSH = "flush"    # train() fed all its data: hand out a partial batch now


class _Stalled(Exception):
    pass


class FeedConn:
    """One feeder's partition on its way through the queue."""

    def __init__(self, channel: Optional[Channel], mode: str, label: str):
        self.channel = channel
        self.mode = mode
        self.label = label
        self.rows_in = 0
        self.results_out = 0
        self.input_done = False
        self.consumed = threading.Event()
        self.finished = threading.Event()  # inference: every result sent

    def send_results(self, results: list) -> None:
        assert self.channel is not None
        self.channel.send({"type": "results", "n": len(results)})
        self.channel.send_bytes(pickle.dumps(results, protocol=5))
        self.results_out += len(results)
        self._check_finished()

    def _check_finished(self) -> None:
        if self.input_done and self.results_out >= self.rows_in:
            self.finished.set()


class InputQueue:
    def __init__(self, name: str):
        self.name = name
        self.q: "queue.Queue" = queue.Queue(maxsize=QUEUE_BATCHES)
        self.terminated = threading.Event()
        self.ended = threading.Event()
        self.last_take = time.monotonic()  # when the consumer last took an item

    def stalled_for(self, feed_timeout: float) -> Optional[float]:
        """Seconds the consumer has taken nothing from a full queue, once that is at
        least ``feed_timeout``: a new feeder would only wait out the same timeout."""
        idle = time.monotonic() - self.last_take
        return idle if self.q.full() and idle >= feed_timeout else None

    def put(self, item, timeout: Optional[float] = None) -> bool:
        """Block while full; False once the consumer has terminated the feed, or
        when ``timeout`` passes with no room."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.terminated.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            try:
                self.q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def marker(self, item) -> None:
        """Markers never wait for room: they must not be stuck behind data."""
        with self.q.mutex:
            self.q.queue.append(item)
            self.q.unfinished_tasks += 1
            self.q.not_empty.notify()

    def terminate(self) -> None:
        """Drop what is queued and refuse the rest (DataFeed.terminate)."""
        self.terminated.set()
        while True:
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, tuple) and item[0] == "end_partition":
                item[1].consumed.set()


class FeedHub:
    """Everything a node's feed needs; ``ctx.mgr`` in a map_fun."""

    def __init__(self, node_dir: str, secret: bytes, queues: List[str], store_kind: str,
                 describe: str):
        self.node_dir = node_dir
        self.secret = secret
        self.queue_names = list(queues)
        self.store_kind = store_kind
        self.describe = describe
        self._queues: Dict[str, InputQueue] = {}
        self._lock = threading.Lock()
        self._stores: Dict[str, Union[MemoryStore, DiskStore]] = {}
        self.finished = threading.Event()  # map_fun returned: refuse further data
        self.failure: Optional[str] = None  # map_fun's traceback, once it raised
        self.socket_path = os.path.join(node_dir, "feed.sock")
        self._server: Optional[socket.socket] = None
        self.on_replayed = None  # set by the node: tells the driver a replay ended

    def queue(self, name: str) -> InputQueue:
        with self._lock:
            if name not in self._queues:
                self._queues[name] = InputQueue(name)
            return self._queues[name]

    # -- the local socket ---------------------------------------------------
    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        sock.listen(64)
        self._server = sock
        serve_connections(sock, self.secret, self._serve_feeder, "sparkorca-feed",
                          f"the feed of {self.describe}")

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for store in self._stores.values():
            store.close()

    def _serve_feeder(self, channel: Channel) -> None:
        header = channel.recv()
        q = self.queue(header["qname"])
        if self.finished.is_set() or self.failure is not None:
            channel.send(self._or_failed({"type": "finished"}))
            return
        if q.terminated.is_set() or q.ended.is_set():
            channel.send(self._or_failed({"type": "terminated"}))  # fail() may have ended it
            return
        idle = None if header.get("store_only") else \
            q.stalled_for(header.get("feed_timeout", float("inf")))
        if idle is not None:  # Spark retrying a task that timed out: fail it at once
            channel.send({"type": "stalled", "idle": idle})
            return
        conn = FeedConn(channel, header["mode"], f"partition {header.get('partition')}")
        store_only = bool(header.get("store_only"))  # replayed later, epoch 1 included
        store = self._store_for(header) if header.get("epochs", 1) > 1 or store_only else None
        channel.send({"type": "accepted"})
        while not q.terminated.is_set():
            msg = channel.recv()
            if msg["type"] == "end":
                break
            with channel.reading():
                for batch in pa.ipc.open_stream(channel.rfile):
                    if store is not None:
                        store.add(batch)
                    conn.rows_in += batch.num_rows
                    if not store_only and not q.put(("batch", conn, batch)):
                        break
        if store_only:
            channel.send(self._or_failed({"type": "consumed", "rows": conn.rows_in}))
            return
        if q.terminated.is_set():
            channel.send(self._or_failed({"type": "terminated", "rows": conn.rows_in}))
            return
        conn.input_done = True
        q.put(("end_partition", conn))
        if conn.mode == "inference":
            conn._check_finished()
            while not conn.finished.wait(_POLL):
                if q.terminated.is_set() or self.finished.is_set():
                    channel.send(self._or_failed({"type": "terminated"}))
                    return
            channel.send({"type": "done", "rows": conn.rows_in})
            return
        while not conn.consumed.wait(_POLL):
            if self.finished.is_set() or self.failure is not None:
                break
        channel.send(self._or_failed({"type": "consumed", "rows": conn.rows_in}))

    def fail(self, traceback_text: str) -> None:
        """map_fun raised: queued data is dropped, and every feeder, connected now or
        later, is told why (the traceback), so the Spark task that fails says it."""
        self.failure = traceback_text  # first: a feeder that sees a queue end reads it
        with self._lock:  # a queue made after this looks at ``failure`` once made
            names = set(self.queue_names) | set(self._queues)
        for name in names:
            self.queue(name).terminate()

    def _or_failed(self, reply: dict) -> dict:
        """``reply``, or once map_fun has raised, its traceback instead."""
        if self.failure is None:
            return reply
        return {"type": "failed", "node": self.describe, "traceback": self.failure}

    # -- epochs beyond the first -------------------------------------------
    def _store_for(self, header: dict):
        key = header["feed_id"]
        with self._lock:
            if key not in self._stores:
                self._stores[key] = open_store(self.store_kind,
                                               os.path.join(self.node_dir, f"store-{key}"))
            return self._stores[key]

    def replay(self, qname: str, feed_id: str, epochs: int, feed_timeout: float,
               marks: bool = False) -> None:
        """Feed the stored first epoch ``epochs`` more times (a thread of its own);
        ``on_replayed`` reports the end, or that the consumer stopped taking data.
        With ``marks`` every epoch ends with a flush (the consumer's next batch is
        partial or empty: the end of that epoch), as the Estimators read epochs."""
        def run():
            store = self._stores.pop(feed_id, None)
            q = self.queue(qname)
            conn = FeedConn(None, "train", "replay")
            error = None
            try:
                # a node fed nothing has no store, and its epochs are empty ones
                for epoch in range(epochs if store is not None or marks else 0):
                    for part in store.parts() if store is not None else ():
                        for batch in part:
                            conn.rows_in += batch.num_rows
                            if not q.put(("batch", conn, batch), feed_timeout):
                                raise _Stalled
                        del part
                    if marks and epoch < epochs - 1:
                        q.marker(FLUSH)
                conn.input_done = True
                if q.put(("end_partition", conn), feed_timeout):
                    if marks:
                        q.marker(FLUSH)  # after end_partition: the consumer stops here
                    while not conn.consumed.wait(_POLL):
                        if self.finished.is_set() or q.terminated.is_set():
                            break
            except _Stalled:
                if not q.terminated.is_set():
                    error = (f"replaying the stored epoch to {self.describe} timed out: its "
                             f"consumer took no data for feed_timeout={feed_timeout:g}s")
            finally:
                if store is not None:
                    store.close()
                if self.on_replayed:
                    self.on_replayed(feed_id, conn.rows_in, error)
        threading.Thread(target=run, name="sparkorca-replay", daemon=True).start()

    def flush(self, qname: str) -> None:
        self.queue(qname).marker(FLUSH)

    def end(self) -> None:
        for name in set(self.queue_names) | set(self._queues):
            q = self.queue(name)
            q.ended.set()
            q.marker(END)


class DataFeed:
    """The consumer side of InputMode.SPARK, as TensorFlowOnSpark's TFNode.DataFeed.

    ``next_batch(n)`` returns up to ``n`` rows (a dict of columns with
    ``input_mapping``); ``next_batch_arrow(n)`` / ``next_batch_numpy(n)`` are the
    fast paths with no Python object per row. In train mode a batch can span
    partitions, and when train() has fed everything the next call returns what
    is left (a partial batch, or an empty one: the end of that train()'s data;
    ``should_stop()`` turns True at shutdown or terminate()). In inference mode a
    batch never spans partitions, and ``batch_results`` must return one result per
    row, in order.
    """

    def __init__(self, mgr: FeedHub, train_mode: bool = True, qname_in: str = "input",
                 qname_out: str = "output", input_mapping: Optional[dict] = None):
        self.mgr = mgr
        self.train_mode = train_mode
        self.qname_in = qname_in
        self.qname_out = qname_out
        self.input_mapping = dict(input_mapping) if input_mapping is not None else None
        self.done_feeding = False
        self._q = mgr.queue(qname_in)
        self._cur: Optional[pa.RecordBatch] = None
        self._cur_conn: Optional[FeedConn] = None
        self._pos = 0
        self._owed: Deque[list] = collections.deque()  # [conn, rows still owed a result]

    # -- taking rows off the queue -----------------------------------------
    def _take(self, n: int) -> List[pa.RecordBatch]:
        out: List[pa.RecordBatch] = []
        count = 0
        first_conn = None
        while count < n and not self.done_feeding:
            if self._cur is None or self._pos >= self._cur.num_rows:
                self._cur = None
                item = self._q.q.get()
                self._q.last_take = time.monotonic()
                if item == END:
                    self.done_feeding = True
                    break
                if item == FLUSH:
                    break  # train() fed everything: a partial (or empty) batch now
                kind, conn = item[0], item[1]
                if kind == "end_partition":
                    conn.consumed.set()
                    if not self.train_mode and count:
                        break
                    continue
                self._cur, self._cur_conn, self._pos = item[2], conn, 0
            if not self.train_mode:
                if first_conn is None:
                    first_conn = self._cur_conn
                elif self._cur_conn is not first_conn:
                    break  # an inference batch holds one partition's rows only
            if out and out[-1].schema != self._cur.schema:
                break  # a batch holds one schema
            take = min(n - count, self._cur.num_rows - self._pos)
            out.append(self._cur.slice(self._pos, take))
            self._pos += take
            count += take
        if self._q.terminated.is_set():
            self.done_feeding = True
        if not self.train_mode and count:
            self._owed.append([first_conn, count])
        return out

    def next_batch(self, batch_size: int):
        """Up to ``batch_size`` rows as the RDD held them (fewer at the end of data)."""
        batches = self._take(batch_size)
        mapping = self.input_mapping
        if mapping is None:
            return [row for b in batches for row in rowcodec.batch_to_rows(b)]
        return self._mapped(batches, mapping)

    def _mapped(self, batches, mapping: dict) -> dict:
        tensors: Dict[str, list] = {t: [] for t in mapping.values()}
        for b in batches:
            names = b.schema.names
            if all(c in names for c in mapping):
                for col, tensor in mapping.items():
                    tensors[tensor].extend(b.column(names.index(col)).to_pylist())
                continue
            rows = rowcodec.batch_to_rows(b)  # TFoS: positions follow the sorted names
            for i, (_, tensor) in enumerate(sorted(mapping.items())):
                tensors[tensor].extend(r[i] for r in rows)
        return tensors

    def next_batch_arrow(self, batch_size: int) -> Optional[pa.RecordBatch]:
        """Up to ``batch_size`` rows as one ``pyarrow.RecordBatch`` (None: no data)."""
        batches = self._take(batch_size)
        if not batches:
            return None
        if len(batches) == 1:
            return batches[0]
        return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]

    def next_batch_numpy(self, batch_size: int) -> Optional[dict]:
        """Up to ``batch_size`` rows as ``{column: numpy array}`` (None: no data)."""
        batch = self.next_batch_arrow(batch_size)
        return None if batch is None else rowcodec.batch_to_numpy(batch)

    def should_stop(self) -> bool:
        """True once the feed is over (shutdown) or terminate() was called."""
        return self.done_feeding

    def batch_results(self, results) -> None:
        """Send one result per row of the previous inference batches, in order."""
        results = list(results)
        while results:
            if not self._owed:
                raise OrcaRuntimeError(f"batch_results got {len(results)} more result(s) "
                                       "than rows were handed out by next_batch")
            conn, owed = self._owed[0]
            part, results = results[:owed], results[owed:]
            conn.send_results(part)
            self._owed[0][1] -= len(part)
            if self._owed[0][1] == 0:
                self._owed.popleft()

    def terminate(self) -> None:
        """Stop the feed: queued data is dropped, feeders skip their partitions."""
        log.info("DataFeed.terminate(): feed of %r stops", self.qname_in)
        self._q.terminate()
        self.done_feeding = True
        self._cur = None

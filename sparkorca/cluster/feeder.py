"""The Spark-task side of the InputMode.SPARK feed: stream one partition, as Arrow
record batches, into the TFCluster node on this task's executor.

Runs on executors inside ``mapInArrow`` / ``mapPartitions``; imports stay light.
"""

from __future__ import annotations

import pickle
import socket
import threading
from typing import Iterable, Iterator, List

import pyarrow as pa

from ..errors import OrcaRuntimeError
from ..node.channel import connect_unix
from ..spark.executor import executor_id


def _describe(node: dict) -> str:
    return (f"TFCluster node {node['worker_num']} ({node['job_name']}:{node['task_index']} on "
            f"executor {node['executor_id']} at {node['host']})")


def pick_node(nodes: List[dict], partition: int) -> dict:
    """The fed node on this executor (several on a local[N] master: spread by partition)."""
    exec_id = executor_id()
    mine = [n for n in nodes if n["executor_id"] == exec_id]
    if not mine:
        where = sorted({n["executor_id"] for n in nodes})
        raise OrcaRuntimeError(
            f"partition {partition} runs on Spark executor {exec_id}, where no TFCluster "
            f"worker node runs (they run on executors {where}). Every executor that "
            "feeding tasks can run on must host a node: run the cluster with "
            "num_executors = the number of executors, one task slot each.")
    return mine[partition % len(mine)]


class _Feed:
    """One partition's connection to its node."""

    def __init__(self, cfg: dict, partition: int, mode: str):
        self.cfg = cfg
        self.node = pick_node(cfg["nodes"], partition)
        self.what = f"feeding partition {partition} to {_describe(self.node)}"
        self.timeout = cfg["feed_timeout"]
        try:
            self.ch = connect_unix(self.node["socket"], bytes.fromhex(cfg["secret"]),
                                   timeout=min(30.0, self.timeout))
        except (FileNotFoundError, ConnectionRefusedError):
            raise OrcaRuntimeError(f"{self.what}: the node is not running (its map_fun ended "
                                   "or failed; the driver reports why)") from None
        self.ch.send({"qname": cfg["qname"], "mode": mode, "feed_id": cfg["feed_id"],
                      "epochs": cfg["epochs"], "partition": partition,
                      "store_only": cfg.get("store_only", False),
                      "feed_timeout": self.timeout})
        try:
            reply = self.checked(self.ch.recv())
            if reply["type"] == "stalled":  # an earlier attempt already waited it out
                raise self.timed_out(f" (it has taken nothing for {reply['idle']:.0f}s)")
            self.accepted = reply["type"] == "accepted"
        except BaseException:
            self.ch.close()
            raise
        self.ch.settimeout(self.timeout)

    def send_batches(self, batches: Iterable[pa.RecordBatch]) -> None:
        writer = writer_schema = None
        for batch in batches:
            if writer is None or batch.schema != writer_schema:
                if writer is not None:
                    writer.close()
                self.ch.send({"type": "stream"})
                writer, writer_schema = pa.ipc.new_stream(self.ch, batch.schema), batch.schema
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
        self.ch.send({"type": "end"})

    def timed_out(self, detail: str = "") -> OrcaRuntimeError:
        return OrcaRuntimeError(
            f"{self.what} timed out: its consumer took no data for feed_timeout="
            f"{self.timeout:g}s{detail}. Is map_fun still calling DataFeed.next_batch()? "
            "(call DataFeed.terminate() to stop a feed early)")

    def checked(self, reply: dict) -> dict:
        """The node's ``reply``; raises map_fun's traceback if that is what it says."""
        if reply.get("type") == "failed":
            raise OrcaRuntimeError(f"{self.what}: its map_fun failed:\n{reply.get('traceback')}")
        return reply

    def broken(self, e: BaseException) -> OrcaRuntimeError:
        return OrcaRuntimeError(f"{self.what}: the node closed the connection ({e}); its "
                                "map_fun ended or failed (the driver reports why)")

    def close(self) -> None:
        self.ch.close()


def _reply_after_break(feed: _Feed, error: BaseException) -> dict:
    """A send failed: the node may have said why (terminate) before closing."""
    try:
        feed.ch.settimeout(5)
        return feed.ch.recv()
    except (OSError, ConnectionError, ValueError):
        raise feed.broken(error) from None


def train_partition(cfg: dict, partition: int, batches: Iterator[pa.RecordBatch]) -> int:
    """Feed one partition for train(); the number of rows the node took."""
    first = next(batches, None)
    if first is None:
        return 0
    feed = _Feed(cfg, partition, "train")
    try:
        if not feed.accepted:
            return 0
        try:
            feed.send_batches(_chain(first, batches))
            reply = feed.checked(feed.ch.recv())
        except socket.timeout:
            raise feed.timed_out() from None
        except (BrokenPipeError, ConnectionResetError) as e:
            reply = feed.checked(_reply_after_break(feed, e))
        except ConnectionError as e:
            raise feed.broken(e) from None
        return int(reply.get("rows", 0))
    finally:
        feed.close()


def inference_partition(cfg: dict, partition: int,
                        batches: Iterator[pa.RecordBatch]) -> Iterator[list]:
    """Feed one partition for inference(); yields lists of results, in row order."""
    first = next(batches, None)
    if first is None:
        return
    feed = _Feed(cfg, partition, "inference")
    try:
        if not feed.accepted:
            raise OrcaRuntimeError(f"{feed.what}: the node's feed has ended (terminate() or "
                                   "shutdown) so it cannot answer inference requests")
        sent: list = []

        def send():
            try:
                feed.send_batches(_chain(first, batches))
            except BaseException as e:  # reported below, after the node's reply
                sent.append(e)
        sender = threading.Thread(target=send, name="sparkorca-inference-send", daemon=True)
        sender.start()
        while True:
            try:
                msg = feed.ch.recv()
            except socket.timeout:
                raise feed.timed_out() from None
            except ConnectionError as e:
                raise feed.broken(sent[0] if sent else e) from None
            if msg["type"] == "results":
                yield pickle.loads(feed.ch.recv_bytes())
            elif msg["type"] == "done":
                break
            else:
                feed.checked(msg)
                raise OrcaRuntimeError(f"{feed.what}: the node stopped answering ({msg['type']})")
        sender.join()
        if sent and not isinstance(sent[0], (BrokenPipeError, ConnectionResetError)):
            raise sent[0]
    finally:
        feed.close()


def _chain(first, rest):
    yield first
    yield from rest

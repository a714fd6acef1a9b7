"""Shards / Spark DataFrame -> Ray Dataset without the driver.

Each Spark task turns its partition into Arrow tables and hands them to the
*holder* actor on its executor's Ray node, which puts them into the node's object
store and so owns them: the data lives on after the task and its Python worker are
gone, and it never leaves the machine. On Linux the task passes each block in an
anonymous memory file over the holder's local socket (``local_handoff``: one copy
into the store, and the task never joins Ray); elsewhere, or when no holder serves
its machine that way, the task joins Ray, puts the block and the holder puts it
again (Ray 2.56 removed ``ray.put(_owner=)``). The driver only gathers the object
refs, in partition order, and builds the Dataset from them: no row passes through
it.

The holders (0 CPU, one per executor's Ray node) start with Ray on Spark and serve
every transfer until Ray stops: a holder is a process start (about a CPU-second
here), which a transfer would otherwise pay on every node while Spark needs the
CPUs. A holder hands a transfer's refs over to the driver and keeps none itself:
Ray frees the blocks once the Dataset (and whatever the driver made of it) is
gone, as it would a driver's own puts.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
from typing import Any, List, NamedTuple, Tuple

log = logging.getLogger(__name__)

HOLDER_PREFIX = "sparkorca-holder"


def _holder_class():
    import ray

    from . import local_handoff

    @ray.remote(num_cpus=0)
    class Holder:
        """Owns the blocks Spark tasks hand over on its node; hands their refs to the
        driver. Keys: (transfer tag, partition, attempt, block). Tasks reach it over
        its block socket at ``address`` (authenticated with ``secret``), or through
        Ray (``store``)."""

        def __init__(self, address: str, secret: bytes):
            self.refs: dict = {}
            self.ended: set = set()  # the tags of transfers handed over (or failed)
            self.lock = threading.Lock()  # the socket's threads put too
            if local_handoff.supported():
                try:
                    self.server = local_handoff.BlockServer(address, secret, self.put)
                except OSError as e:  # e.g. a sandbox that forbids abstract sockets
                    log.warning("the data holder serves no block socket (%s): Spark tasks "
                                "put through Ray", e)

        def put(self, key: tuple, table) -> None:
            if key[0] in self.ended:  # an attempt Spark gave up on, still running
                return
            # Its size and schema go with the ref, so the driver need not ask the block
            block = ([ray.put(table)], table.num_rows, table.nbytes,
                     table.schema.serialize().to_pybytes())
            with self.lock:
                if key[0] not in self.ended:
                    self.refs[key] = block

        def store(self, key: tuple, table) -> None:
            # The table came as an argument, in the store but owned by the Spark
            # task's process; the put makes the holder its owner.
            self.put(tuple(key), table)

        def hand_over(self, tag: str, succeeded: list) -> list:
            """The transfer's blocks from the attempts that succeeded, each ref nested
            in a list (a ref, not its value): the caller borrows them, and they live
            as long as its references do. None stay here; a failed attempt's go, and
            so does whatever a straggling attempt stores later."""
            keep = {tuple(s) for s in succeeded}
            with self.lock:
                self.ended.add(tag)
                taken = {k: self.refs.pop(k) for k in [k for k in self.refs if k[0] == tag]}
            return [(key, block) for key, block in taken.items() if key[1:3] in keep]

    return Holder


def executor_nodes(nodes: List[dict]) -> List[dict]:
    """The alive nodes that have a Spark executor; all alive ones where no node
    says (a Ray cluster sparkorca did not start)."""
    alive = [n for n in nodes if n["alive"]]
    with_executor = [n for n in alive if n.get("executor_id")]
    return with_executor or alive


def holder_name(node_id: str) -> str:
    return f"{HOLDER_PREFIX}-{node_id}"


_starting = threading.Lock()  # two transfers at once must not both start a node's holder


def node_holders(ray_context) -> List[Tuple[dict, Any, str]]:
    """(node, holder, block socket name) of every alive executor's Ray node
    (``ray_context``'s); a node's holder starts the first time it is asked for, or
    again if it died, and they end when Ray stops. A head without an executor (the
    driver's, on a cluster) gets none: tasks run on the executors' nodes.

    Not waited for here: Ray on Spark starts them and goes on; a transfer waits
    for them (``holders_ready``) before its Spark job."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .local_handoff import new_address
    holders = ray_context.holders
    nodes = executor_nodes(ray_context.nodes())
    with _starting:
        for node in nodes:
            node_id = node["node_id"]
            if node_id not in holders or _dead(holders[node_id][0]):
                address = new_address()
                holders[node_id] = (_holder_class().options(
                    name=holder_name(node_id), get_if_exists=True,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                ).remote(address, ray_context.holder_secret), address)
        return [(n, *holders[n["node_id"]]) for n in nodes]


def holders_ready(placed: List[Tuple[dict, Any, str]], timeout: float = 120) -> None:
    """Wait until every holder runs (they start with Ray on Spark, so at once but on
    a transfer right after it): a task finding no socket yet would join Ray instead,
    at a CPU-second's cost on the node."""
    import ray

    from ..errors import OrcaRuntimeError
    waiting = {h.__ray_ready__.remote(): node for node, h, _ in placed}
    ready, late = ray.wait(list(waiting), num_returns=len(waiting), timeout=timeout)
    ray.get(ready)  # a holder that failed to start raises here
    if late:
        raise OrcaRuntimeError(
            f"Spark -> Ray: the data holders of Ray nodes "
            f"{', '.join(waiting[r]['node_id'] for r in late)} did not start in {timeout:.0f} s")


def _dead(handle) -> bool:
    """Whether the GCS has this actor as dead (killed, e.g. by Ray's memory monitor)."""
    import ray
    info = ray._private.state.actors(actor_id=handle._actor_id.hex())
    return not info or info.get("State") == "DEAD"


def _find_holder(name: str, namespace: str):
    """The holder of this node; its registration may be a moment behind the job."""
    import ray

    from .._wait import wait_for

    def lookup():
        try:
            return ray.get_actor(name, namespace=namespace)
        except ValueError:  # not registered yet
            return None
    return wait_for(lookup, 60, f"the Ray actor {name} that owns this node's data")


BLOCK_BYTES = 32 << 20


class HolderAt(NamedTuple):
    node_id: str
    host: str
    executor_id: str  # "" where the node has none (a Ray sparkorca did not start)
    address: str  # its block socket's name (sparkorca.data.local_handoff)


class Route(NamedTuple):
    """What a transfer's Spark tasks need to reach the holders."""
    tag: str
    namespace: str
    secret: bytes  # the holders' block sockets'; goes with the task, never in conf
    holders: Tuple[HolderAt, ...]


def _put_partition(route: Route, index: int, batches):
    """In a Spark task: this partition into its node's object store, in blocks of
    about BLOCK_BYTES owned by the holder there. Blocks go out while Spark still
    produces the rest; the task waits until the holder has every one (until then
    the task's process owns the data)."""
    from ..spark.executor import task_attempt_id
    from . import local_handoff
    attempt = task_attempt_id()  # a failed attempt's blocks must not mix with this one's
    blocks = _blocks(batches)
    channel = _local_channel(route)
    if channel is None:
        return [(index, attempt, _put_through_ray(route, index, attempt, blocks))]
    try:
        return [(index, attempt, local_handoff.send_blocks(channel, route.tag, index, attempt,
                                                            blocks))]
    finally:
        channel.close()


def _blocks(batches):
    """The non-empty record batches, in lists of about BLOCK_BYTES."""
    block: list = []
    size = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        block.append(batch)
        size += batch.nbytes
        if size >= BLOCK_BYTES:
            yield block
            block, size = [], 0
    if block:
        yield block


def _local_channel(route: Route):
    """A channel to the block socket of this executor's holder, else of one on this
    machine (an executor without a raylet); None where there is none to reach."""
    from . import local_handoff
    if not local_handoff.supported():
        return None
    from ..node.host import node_ip
    from ..spark.executor import executor_id
    mine, here = executor_id(), node_ip()
    for holder in sorted(route.holders, key=lambda h: h.executor_id != mine):
        if holder.executor_id == mine or holder.host == here:
            channel = local_handoff.connect(holder.address, route.secret)
            if channel is not None:
                return channel
    return None


def _put_through_ray(route: Route, index: int, attempt: int, blocks) -> int:
    """The Ray path: join Ray, put each block, and have the holder put it again (to
    own it); how many blocks."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import ray
    pending: list = []
    with ThreadPoolExecutor(1, thread_name_prefix="sparkorca-join") as pool:
        # A fresh Python worker joins Ray (import, connect) while Spark produces the
        # first block, rather than before it asks for any
        holder = pool.submit(_local_holder, route)
        for block in blocks:
            pending.append(holder.result().store.remote((route.tag, index, attempt, len(pending)),
                                                        pa.Table.from_batches(block)))
    ray.get(pending)
    return len(pending)


def _local_holder(route: Route):
    """Join Ray through this executor's raylet; the holder of its node. An executor
    without a raylet (fewer Ray nodes than executors, or a replacement the healer has
    not reached yet) joins any node of its host, maybe the driver's head, which has
    none: then a holder on the same host (its copy stays on the machine), else any."""
    import ray

    from ..ray import connect
    connect()
    node = ray.get_runtime_context().get_node_id()
    hosts = {h.node_id: h.host for h in route.holders}
    if node not in hosts:
        here = ray.util.get_node_ip_address()
        node = next((n for n, host in hosts.items() if host == here), next(iter(hosts)))
    return _find_holder(holder_name(node), route.namespace)


def _to_ray(run_puts):
    """Let ``run_puts(route)`` run the Spark job whose tasks put their partitions on
    the nodes' holders (it returns each successful task's (partition, attempt,
    blocks)), and build the Dataset from those tasks' blocks."""
    import ray

    from ..context import OrcaContext
    ray_context = OrcaContext.get_ray_context()  # Ray on Spark, started on demand
    placed = node_holders(ray_context)
    holders = [holder for _, holder, _ in placed]
    route = Route(tag=secrets.token_hex(4), namespace=ray.get_runtime_context().namespace,
                  secret=ray_context.holder_secret,
                  holders=tuple(HolderAt(node["node_id"], node["host"],
                                         node.get("executor_id") or "", address)
                                for node, _, address in placed))
    # the driver idles during the job: Ray Data's first import (~0.2 s) happens then
    importing = threading.Thread(target=importlib.import_module, args=("ray.data",),
                                 name="sparkorca-import", daemon=True)
    importing.start()
    holders_ready(placed)
    try:  # (partition, attempt, blocks) of each successful task
        done = [tuple(d) for d in run_puts(route)]
    except BaseException:
        for holder in holders:  # what the failed job's tasks put goes
            try:
                holder.hand_over.remote(route.tag, [])
            except Exception:  # Ray going away: the blocks go with it; the job's error counts
                pass
        raise
    succeeded = [(p, a) for p, a, _ in done]
    handed = ray.get([h.hand_over.remote(route.tag, succeeded) for h in holders])
    importing.join()
    blocks = {tuple(k): v for blocks_of_node in handed for k, v in blocks_of_node}
    _check_complete(done, blocks)
    return dataset_of([blocks[k] for k in sorted(blocks)])


def _check_complete(done: list, blocks: dict) -> None:
    """Every block each successful task put is there: a holder lost with its node
    (or killed) during the transfer must fail it, not drop the rows silently."""
    from collections import Counter

    from ..errors import OrcaRuntimeError
    arrived = Counter(k[1:3] for k in blocks)
    for partition, attempt, count in done:
        got = arrived[(partition, attempt)]
        if got != count:
            raise OrcaRuntimeError(
                f"Spark -> Ray: partition {partition} put {count} blocks and {got} reached "
                "the driver: the Ray node (or the holder actor) that held the others was "
                "lost during the transfer; run it again")


def block_metadata(num_rows: int, size_bytes: int, schema: bytes):
    """Ray Data's metadata of an Arrow block, from what its holder reported."""
    import pyarrow as pa
    from ray.data.block import BlockMetadataWithSchema
    return BlockMetadataWithSchema(
        num_rows=num_rows, size_bytes=size_bytes, exec_stats=None, input_files=None,
        schema=pa.ipc.read_schema(pa.py_buffer(schema)))


def dataset_of(blocks: list):
    """A materialized Ray Dataset of ``blocks`` ([ref], rows, bytes, schema), in order.

    ``ray.data.from_arrow_refs`` would run a task per block only to learn what the
    holders already know (cold worker processes on a busy node); this is its body
    with that metadata. Ray Data's internals move between releases: any other Ray
    gets the public call."""
    import ray
    refs = [b[0][0] for b in blocks]
    try:
        from ray.data._internal.logical.interfaces import LogicalPlan
        from ray.data._internal.logical.operators import FromArrow
        from ray.data._internal.stats import DatasetStats
        from ray.data.context import DataContext
        from ray.data.dataset import MaterializedDataset
    except ImportError as e:  # tests/test_to_ray_units.py fails on such a Ray first
        log.debug("Ray Data's internals moved (%s); from_arrow_refs instead", e)
        return ray.data.from_arrow_refs(refs)
    metadata = [block_metadata(*b[1:]) for b in blocks]
    stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
    context = DataContext.get_current().copy()
    return MaterializedDataset(LogicalPlan(FromArrow(refs, metadata), context), context, stats)


def shards_to_ray_dataset(shards):
    """A Ray Dataset of Shards, its blocks in partition order."""
    return arrow_rdd_to_ray_dataset(shards.to_arrow_rdd())


def arrow_rdd_to_ray_dataset(arrow_rdd):
    """A Ray Dataset of an RDD of Arrow record batches, in partition order."""
    return _to_ray(lambda route: arrow_rdd.mapPartitionsWithIndex(
        lambda i, it: _put_partition(route, i, it)).collect())


def spark_df_to_ray_dataset(df):
    """A Ray Dataset of a Spark DataFrame, its blocks in partition order: Spark hands
    each partition to Python as Arrow (mapInArrow) and the puts happen right there."""
    def run(route):
        def put(batches):
            import pyarrow as pa

            from ..spark.executor import partition_id
            done = _put_partition(route, partition_id(), batches)
            yield pa.RecordBatch.from_pydict({"p": [d[0] for d in done],
                                              "a": [d[1] for d in done],
                                              "n": [d[2] for d in done]})
        return [(r.p, r.a, r.n) for r in df.mapInArrow(put, "p long, a long, n long").collect()]
    return _to_ray(run)

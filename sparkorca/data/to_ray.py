"""Shards / Spark DataFrame -> Ray Dataset without the driver.

Each Spark task joins the Ray node of its own executor (RayOnSpark), turns its
partition into one Arrow table and hands it to the *holder* actor on that node,
which puts it again so that the holder, not the task, owns the object (Ray 2.56
removed ``ray.put(_owner=)``): the data lives on after the task and its Python
worker are gone, and it moves only within the node's shared memory. The driver
only gathers the object refs, in partition order, and builds the Dataset from
them: no row passes through it. The holders
(0 CPU, one per Ray node, named per transfer) live until the context stops.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
from typing import Any, List, Optional

log = logging.getLogger(__name__)

HOLDER_PREFIX = "sparkorca-holder"


def _holder_class():
    import ray

    @ray.remote(num_cpus=0)
    class Holder:
        """Owns the partitions put on its node; hands their refs to the driver."""

        def __init__(self):
            self.refs = {}

        def store(self, key: tuple, table) -> None:
            # The table came as an argument, in the store but owned by the Spark
            # task's process; this put makes the holder its owner. Its size and
            # schema go with the ref, so the driver need not ask the block.
            self.refs[tuple(key)] = ([ray.put(table)], table.num_rows, table.nbytes,
                                     table.schema.serialize().to_pybytes())

        def collected(self) -> list:
            return list(self.refs.items())  # the ref nested in a list: a ref, not its value

    return Holder


def start_holders(tag: str) -> List[Any]:
    """One holder on every alive Ray node that has a Spark executor."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    holder = _holder_class()
    handles = []
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        handles.append(holder.options(
            name=f"{HOLDER_PREFIX}-{tag}-{node['NodeID']}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote())
    # Not waited for: a named actor is found as soon as it is registered, and the
    # tasks' first calls queue until it runs, so the holders start during the job.
    return handles


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


def _put_partition(tag: str, namespace: str, index: int, batches):
    """In a Spark task: this partition into the local object store, in blocks of
    about BLOCK_BYTES owned by the holder on this node. Blocks go out while Spark
    still produces the rest; the task waits for all of them before it ends (until
    the holder has its copy, the task's process owns the data)."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import ray

    from ..spark.executor import attempt_number
    attempt = attempt_number()  # a failed attempt's blocks must not mix with this one's
    pending: list = []
    block: list = []
    size = 0
    with ThreadPoolExecutor(1, thread_name_prefix="sparkorca-join") as pool:
        # A fresh Python worker joins Ray (import, connect) while Spark produces the
        # first block, rather than before it asks for any
        holder = pool.submit(_local_holder, tag, namespace)

        def send():
            pending.append(holder.result().store.remote((index, attempt, len(pending)),
                                                        pa.Table.from_batches(block)))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            block.append(batch)
            size += batch.nbytes
            if size >= BLOCK_BYTES:
                send()
                block, size = [], 0
        if block:
            send()
    ray.get(pending)
    return [(index, attempt)]


def _local_holder(tag: str, namespace: str):
    """Join Ray through this executor's raylet; the holder on its node."""
    import ray

    from ..ray import connect
    connect()
    return _find_holder(f"{HOLDER_PREFIX}-{tag}-{ray.get_runtime_context().get_node_id()}",
                        namespace)


def _to_ray(run_puts, holders_out: Optional[list] = None):
    """Start the holders, let ``run_puts(tag, namespace)`` run the Spark job whose
    tasks put their partitions (it returns each successful task's (partition,
    attempt)), and build the Dataset from those tasks' blocks.

    The holders live until the context stops, or, when ``holders_out`` is given,
    go there for the caller to end (with them the Dataset's data)."""
    import ray

    from ..context import OrcaContext
    ray_context = OrcaContext.get_ray_context()  # Ray on Spark, started on demand
    tag = secrets.token_hex(4)
    namespace = ray.get_runtime_context().namespace
    holders = start_holders(tag)
    if holders_out is None:
        ray_context.keep_alive(holders)
    else:
        holders_out.extend(holders)
    # the driver idles during the job: Ray Data's first import (~0.2 s) happens then
    importing = threading.Thread(target=importlib.import_module, args=("ray.data",),
                                 name="sparkorca-import", daemon=True)
    importing.start()
    succeeded = {tuple(done) for done in run_puts(tag, namespace)}  # (partition, attempt)
    importing.join()
    blocks = {}
    for collected in ray.get([h.collected.remote() for h in holders]):
        blocks.update({tuple(k): v for k, v in collected if tuple(k[:2]) in succeeded})
    return dataset_of([blocks[k] for k in sorted(blocks)])


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


def arrow_rdd_to_ray_dataset(arrow_rdd, holders_out: Optional[list] = None):
    """A Ray Dataset of an RDD of Arrow record batches, in partition order."""
    return _to_ray(lambda tag, namespace: arrow_rdd.mapPartitionsWithIndex(
        lambda i, it: _put_partition(tag, namespace, i, it)).collect(), holders_out)


def spark_df_to_ray_dataset(df, holders_out: Optional[list] = None):
    """A Ray Dataset of a Spark DataFrame, its blocks in partition order: Spark hands
    each partition to Python as Arrow (mapInArrow) and the puts happen right there."""
    def run(tag, namespace):
        def put(batches):
            import pyarrow as pa

            from ..spark.executor import partition_id
            done = _put_partition(tag, namespace, partition_id(), batches)
            yield pa.RecordBatch.from_pydict({"p": [p for p, _ in done],
                                              "a": [a for _, a in done]})
        return [(r.p, r.a) for r in df.mapInArrow(put, "p long, a long").collect()]
    return _to_ray(run, holders_out)

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

import secrets
from typing import Any, List, Optional

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
            # task's process; this put makes the holder its owner.
            self.refs[tuple(key)] = ray.put(table)

        def collected(self) -> list:
            return [(k, [v]) for k, v in self.refs.items()]  # nested: refs, not values

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
    import pyarrow as pa
    import ray

    from ..ray import connect
    connect()
    holder = _find_holder(f"{HOLDER_PREFIX}-{tag}-{ray.get_runtime_context().get_node_id()}",
                          namespace)
    pending: list = []
    block: list = []
    size = 0

    def send():
        pending.append(holder.store.remote((index, len(pending)), pa.Table.from_batches(block)))
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
    return [index] if pending else []


def _to_ray(run_puts, holders_out: Optional[list] = None):
    """Start the holders, let ``run_puts(tag, namespace)`` run the Spark job whose
    tasks put their partitions, and build the Dataset from the holders' refs.

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
    run_puts(tag, namespace)
    refs = {}
    for collected in ray.get([h.collected.remote() for h in holders]):
        refs.update({tuple(k): v[0] for k, v in collected})
    return ray.data.from_arrow_refs([refs[k] for k in sorted(refs)])


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
            yield pa.RecordBatch.from_pydict({"p": pa.array(done, pa.int64())})
        df.mapInArrow(put, "p long").collect()
    return _to_ray(run, holders_out)

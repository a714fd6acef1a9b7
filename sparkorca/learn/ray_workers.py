"""The Estimators' "ray" backend: the same training workers as on the Spark
backend (each framework's ``train_main(job, ctx)``), run as Ray actors on the
context's Ray cluster (RayOnSpark, or runtime="ray") and fed from Ray Datasets.

DataFrames and Shards reach the object store through ``to_ray_dataset`` (the
executors put their partitions on their own node; no row passes the driver); a
Ray Dataset is used as it is. The rows are split by index into one contiguous
share per worker, and each worker replays its share every epoch from the object
store. The workers join one torch.distributed process group (learn.process_group),
as on the Spark backend; rank 0 reports each epoch to the driver through a Ray queue
and returns the trained state. Every fit's actors end with it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from ..errors import InvalidArgumentError, OrcaRuntimeError, StartupTimeoutError
from .allreduce import CONSEQUENCES
from .data import ArrowInput, Columns, feedable, is_ray_dataset

ACTORS_TIMEOUT = 120.0  # for the workers' actors to be placed and started
POLL = 0.2  # how often the driver looks at the progress queue while it waits
CAUSE_WAIT = 10.0  # for a failed worker's own error, once its partner reported the exchange closed


@dataclasses.dataclass(frozen=True)
class Plan:
    """Where the workers run: ``workers_per_node`` actors on each Ray node with CPUs."""

    nodes: List[str]  # Ray node ids, one entry per worker
    cpus: float  # each worker's CPUs

    @property
    def num_workers(self) -> int:
        return len(self.nodes)

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))


def ray_started() -> None:
    """The context's Ray (started on demand, as Orca's ray backend did)."""
    from ..context import OrcaContext
    OrcaContext.get_ray_context()


def plan(workers_per_node: int) -> Plan:
    import ray
    ray_started()
    nodes = [(n["NodeID"], float(n["Resources"].get("CPU", 0))) for n in ray.nodes()
             if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
    if not nodes:
        raise OrcaRuntimeError("the Ray cluster has no node with a CPU for the workers")
    smallest = min(c for _, c in nodes)
    if smallest < workers_per_node:
        raise InvalidArgumentError(
            "workers_per_node", workers_per_node,
            f"at most {int(smallest)}: each worker takes one CPU or more and the smallest "
            f"Ray node has {smallest:g}")
    cpus = math.floor(smallest / workers_per_node * 1e4) / 1e4  # Ray's CPU granularity
    return Plan([node for node, _ in nodes for _ in range(workers_per_node)], cpus)


# -- data ----------------------------------------------------------------------------
def dataset_of(data: Any, cols: Columns):
    """``data``'s needed columns as a materialized Ray Dataset; a DataFrame's or
    Shards' blocks live as long as the Dataset's refs (the workers' shares)."""
    names = list(cols.features + cols.labels)
    if is_ray_dataset(data):
        return data.select_columns(names).materialize()
    from ..data.to_ray import arrow_rdd_to_ray_dataset, spark_df_to_ray_dataset
    fed = feedable(data, cols)
    if isinstance(fed, ArrowInput):  # (hasattr would be true of any Connect DataFrame)
        return arrow_rdd_to_ray_dataset(fed.to_arrow_rdd())
    return spark_df_to_ray_dataset(fed)


def shares(ds, n: int) -> List[dict]:
    """``n`` contiguous shares of ``ds`` whose row counts differ by one at most,
    each as the ObjectRefs of its Arrow tables ("blocks") and its "rows"."""
    count = ds.count()
    cuts = [count * i // n for i in range(n + 1)]
    return [{"blocks": share.to_arrow_refs(), "rows": cuts[i + 1] - cuts[i]}
            for i, share in enumerate(ds.split_at_indices(cuts[1:-1]))]


class RayFeed:
    """A worker's share (Arrow tables in the object store) as the TFCluster feed's
    ``next_batch_arrow``: an epoch's batches hold ``size`` rows until its end,
    marked by a partial batch or None; the next call starts the next epoch. The
    tables are read from the node's shared memory (no copy when local) and cut
    into batches here, with no Ray Data executor in the worker."""

    def __init__(self, blocks: list, rows: int) -> None:
        self.blocks = blocks  # ObjectRefs of pyarrow Tables, in order
        self.rows = rows
        self._batches: Optional[Iterator[Any]] = None

    def _epoch(self, size: int) -> Iterator[Any]:
        import ray
        held: list = []
        rows = 0
        for ref in self.blocks:
            table = ray.get(ref)
            start = 0
            while start < table.num_rows:
                part = table.slice(start, size - rows)
                start += part.num_rows
                held.append(part)
                rows += part.num_rows
                if rows == size:
                    yield _joined(held)
                    held, rows = [], 0
        if held:
            yield _joined(held)

    def next_batch_arrow(self, size: int):
        if self._batches is None:
            self._batches = self._epoch(size)
        table = next(self._batches, None)
        if table is None or table.num_rows < size:
            self._batches = None
        return table


def _joined(tables: list):
    """One batch of table slices (blocks of one Dataset may differ in type, e.g.
    pandas shards whose dtypes vary: promoted to a common one)."""
    import pyarrow as pa
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables,
                                                               promote_options="permissive")


class WorkerContext:
    """What a training worker's ``main`` reads off its TFCluster ctx, on Ray."""

    def __init__(self, shares: Dict[str, dict], rank: int, progress) -> None:
        self._feeds = {name: RayFeed(share["blocks"], share["rows"])
                       for name, share in shares.items()}
        self._rank = rank
        self._progress = progress

    def get_data_feed(self, train_mode: bool = True, qname_in: str = "input", **_: Any):
        if qname_in not in self._feeds:
            raise OrcaRuntimeError(f"this worker has no data for {qname_in!r}")
        return self._feeds[qname_in]

    def report(self, msg: dict) -> None:
        if self._rank == 0:
            self._progress.put(msg)


class ByValue:
    """A function that Ray carries as pyspark's cloudpickle pickled it, so what
    works in a Spark task (functions of modules registered by value there, as
    for a Spark job) works in a Ray actor or task too."""

    def __init__(self, fn: Callable) -> None:
        from pyspark import cloudpickle
        self.blob = cloudpickle.dumps(fn)
        self._fn: Optional[Callable] = None

    def __reduce__(self):
        return _by_value, (self.blob,)

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            import pickle
            self._fn = pickle.loads(self.blob)
        return self._fn(*args)


def _by_value(blob: bytes) -> ByValue:
    out = ByValue.__new__(ByValue)
    out.blob, out._fn = blob, None
    return out


def _worker_class():
    import ray

    @ray.remote(max_restarts=0, max_task_retries=0)
    class TrainWorker:
        """One training worker: ``main(job, ctx)`` in the workers' process group."""

        def address(self) -> tuple:
            ip = ray.util.get_node_ip_address()
            with socket.socket() as s:  # rank 0's store binds it at once (as Ray Train does)
                s.bind((ip, 0))
                return ip, s.getsockname()[1]

        def run(self, main: ByValue, env: Dict[str, str], shares: Dict[str, dict],
                progress) -> Any:
            os.environ.update(env)
            return main(WorkerContext(shares, int(env["RANK"]), progress))

    return TrainWorker


def _torch_env(rank: int, plan_: Plan, master: tuple) -> Dict[str, str]:
    local = [i for i, node in enumerate(plan_.nodes) if node == plan_.nodes[rank]]
    return {"MASTER_ADDR": master[0], "MASTER_PORT": str(master[1]), "RANK": str(rank),
            "WORLD_SIZE": str(plan_.num_workers), "LOCAL_RANK": str(local.index(rank)),
            "LOCAL_WORLD_SIZE": str(len(local))}


def run_workers(plan_: Plan, main: Callable, job: Any, cols: Optional[Columns], data: Any,
                validation_data: Any, on_progress: Callable[[dict], None]) -> Any:
    """Run ``main(job, ctx)`` on the plan's actors with their shares of ``data``
    (and of ``validation_data``); rank 0's result. A worker's failure ends them all
    and raises with its traceback."""
    import functools

    import ray
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    n = plan_.num_workers
    per_worker: List[Dict[str, dict]] = [{} for _ in range(n)]
    actors: list = []  # the progress queue and the workers: all end here
    try:
        if cols is not None:
            for name, source in (("input", data), ("val", validation_data)):
                if source is not None:
                    for i, share in enumerate(shares(dataset_of(source, cols), n)):
                        per_worker[i][name] = share
        blob = ray.put(ByValue(functools.partial(main, job)))  # once, not per worker
        progress = Queue(actor_options={"num_cpus": 0})
        actors.append(progress.actor)
        cls = _worker_class()
        workers = [cls.options(num_cpus=plan_.cpus,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(
                                   node, soft=False)).remote() for node in plan_.nodes]
        actors.extend(workers)
        master = _started(workers, plan_)
        # the refs travel nested in a dict: Ray hands them over as refs, not values
        refs = [w.run.remote(blob, _torch_env(rank, plan_, master), per_worker[rank],
                             progress) for rank, w in enumerate(workers)]
        results = _wait(refs, progress, on_progress)
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:  # Ray already gone: nothing left to end; keep the first error
                pass
        per_worker.clear()  # the data's blocks go now, not with a kept traceback's frames
    return results[0]


def _started(workers: list, plan_: Plan) -> tuple:
    """Rank 0's address, once every worker runs: one that cannot be placed (its CPUs
    are taken by other actors) fails here, not in the process group's 30 minutes."""
    import ray
    refs = [w.address.remote() for w in workers]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=ACTORS_TIMEOUT)
    if pending:
        raise StartupTimeoutError(
            f"timed out after {ACTORS_TIMEOUT:g}s waiting for the Estimator's workers (Ray "
            f"actors of {plan_.cpus:g} CPU each) to start: {len(ready)} of {len(refs)} "
            f"running; Ray's free resources: {ray.available_resources()}")
    return ray.get(refs[0])


def _wait(refs: list, progress, on_progress: Callable[[dict], None]) -> list:
    """Every worker's result, showing rank 0's progress meanwhile; the first
    worker error raises at once (the others would wait for it in the next
    collective until the group's timeout)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError
    from ray.util.queue import Empty
    pending = list(refs)
    consequence: Optional[OrcaRuntimeError] = None
    cause_deadline = 0.0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=POLL)
        while True:
            try:
                on_progress(progress.get_nowait())
            except Empty:
                break
        for ref in ready:
            rank = refs.index(ref)
            try:
                ray.get(ref)
            except RayTaskError as err:  # its text carries the worker's traceback
                text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))  # no terminal colours
                error = OrcaRuntimeError(f"Estimator.fit: worker {rank} failed:\n{text}")
                if not any(c in text for c in CONSEQUENCES):
                    raise error from None
                # another worker's failure ended its collective: that one's error says why
                consequence = consequence or error
                cause_deadline = cause_deadline or time.monotonic() + CAUSE_WAIT
            except RayActorError as err:
                raise OrcaRuntimeError(f"Estimator.fit: worker {rank} (a Ray actor) died: "
                                       f"{err}") from None
        if consequence is not None and (not pending or time.monotonic() > cause_deadline):
            raise consequence from None
    return ray.get(refs)

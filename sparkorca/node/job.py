"""A Spark job run from a background thread, so the driver can watch its nodes
(or a deadline) while Spark runs it, and cancel it."""

from __future__ import annotations

import functools
import secrets
import threading
from typing import Any, Callable, Optional

from ..spark.session import job_error_text


def over_connect(spark) -> bool:
    """Whether ``spark`` (a session, DataFrame, ...) is Spark Connect's: a client with
    no SparkContext in this process."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


class SparkJob:
    """``start(action)`` runs ``action()`` (a Spark action) in its own job group, or
    under its own tag when ``sc`` is a Spark Connect session.

    ``on_end`` is called when the job ends either way (e.g. to wake a waiting hub).

    Examples
    --------
    >>> job = SparkJob(sc, "start the nodes").start(lambda: rdd.collect())  # doctest: +SKIP
    >>> job.join(); job.result                                               # doctest: +SKIP
    """

    def __init__(self, sc, description: str, group: Optional[str] = None,
                 on_end: Callable[[], None] = lambda: None):
        self.sc = sc
        self.description = description
        self.group = group or f"sparkorca-{secrets.token_hex(4)}"
        self.on_end = on_end
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, action: Callable[[], Any]) -> "SparkJob":
        def body() -> None:
            try:
                if over_connect(self.sc):
                    self.sc.addTag(self.group)  # the client's tags are per thread
                else:
                    self.sc.setJobGroup(self.group, f"sparkorca: {self.description}",
                                        interruptOnCancel=True)
                self.result = action()
            except BaseException as e:  # reported by failure()
                self.error = e
            finally:
                self.on_end()
        self._thread = threading.Thread(target=body, name="sparkorca-job", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def failure(self) -> Optional[str]:
        """The failed job's useful text (the executor's Python traceback), or None."""
        if self.error is None:
            return None
        return f"{self.description} failed:\n{job_error_text(self.error)}"

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the job to end; whether it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def cancel(self, timeout: float = 60.0) -> None:
        """Cancel the job's tasks (interrupting them) and wait for it to end."""
        if self.running:
            try:
                if over_connect(self.sc):
                    self.sc.interruptTag(self.group)
                else:
                    self.sc.cancelJobGroup(self.group)
            except Exception:  # the SparkContext may be stopping already
                pass
            self.join(timeout)


def node_task_action(spark, tasks: int, body: Callable, barrier: bool) -> Callable[[], list]:
    """The Spark action that runs ``body(partition, rows)`` (a generator of dicts) in
    ``tasks`` tasks, a barrier stage if ``barrier``, and returns what they yielded.

    On a SparkContext it is an RDD job; on a Spark Connect session (no RDD reaches
    a client) a ``mapInArrow`` job whose rows carry the dicts as JSON."""
    if not over_connect(spark):
        def rdd_action() -> list:
            rdd = spark.parallelize(range(tasks), tasks)
            return (rdd.barrier() if barrier else rdd).mapPartitionsWithIndex(body).collect()
        return rdd_action

    def connect_action() -> list:
        import json
        df = spark.range(tasks, numPartitions=tasks)
        rows = df.mapInArrow(functools.partial(_json_rows, body), "r string",
                             barrier=barrier).collect()
        return [json.loads(row.r) for row in rows]
    return connect_action


def _json_rows(body: Callable, batches):
    """mapInArrow body: ``body`` for this task's partition, each dict as JSON."""
    import json

    import pyarrow as pa

    from ..spark.executor import partition_id
    for _ in batches:  # the input rows carry nothing
        pass
    out = [json.dumps(item) for item in body(partition_id(), iter(()))]
    yield pa.RecordBatch.from_pydict({"r": pa.array(out, pa.string())})

"""A Spark job run from a background thread, so the driver can watch its nodes
(or a deadline) while Spark runs it, and cancel it."""

from __future__ import annotations

import secrets
import threading
from typing import Any, Callable, Optional

from ..spark.session import job_error_text


class SparkJob:
    """``start(action)`` runs ``action()`` (a Spark action) in its own job group.

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
                self.sc.cancelJobGroup(self.group)
            except Exception:  # the SparkContext may be stopping already
                pass
            self.join(timeout)

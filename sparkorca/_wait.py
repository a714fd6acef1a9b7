"""Deadline-bounded waits on a real signal: the one place sparkorca waits."""

from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

from .errors import OrcaRuntimeError, StartupTimeoutError

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str,
             tail: Optional[Callable[[], str]] = None,
             failed: Optional[Callable[[], Optional[str]]] = None) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    ``failed`` is asked between polls; a message from it ends the wait at once
    (the child died: waiting longer cannot help). Either way the error names
    ``what`` was waited for and carries ``tail()``, the child's last output.
    """
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        result = check()
        if result:
            return result
        why = failed() if failed else None
        if why or time.monotonic() >= deadline:
            msg = why or f"timed out after {timeout:g}s waiting for {what}"
            if why:
                msg = f"{why} while waiting for {what}"
            if tail:
                msg += f"\n--- last output ---\n{tail()}"
            if why:
                raise OrcaRuntimeError(msg)
            raise StartupTimeoutError(msg)
        time.sleep(interval)  # a poll interval, not a synchronisation sleep
        interval = min(interval * 1.5, 0.1)  # a tenth of a second late at most

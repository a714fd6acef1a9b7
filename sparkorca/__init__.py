"""sparkorca: one program on a laptop or a Spark cluster, with Ray and distributed DL.

The context API is imported on first use, so that processes on the executors
(Ray node runners, TFCluster nodes, feeders) that import a part of sparkorca
load nothing of the driver side.
"""

from ._version import __version__
from .errors import (
    InvalidArgumentError,
    JavaError,
    NoContextError,
    OrcaError,
    OrcaRuntimeError,
    StartupTimeoutError,
    UnknownArgumentError,
    UnknownFlagError,
)

_CONTEXT_NAMES = ("OrcaContext", "init_orca_context", "orca_context", "stop_orca_context")

__all__ = [
    "__version__", "init_orca_context", "stop_orca_context", "orca_context", "OrcaContext",
    "OrcaError", "InvalidArgumentError", "UnknownArgumentError", "OrcaRuntimeError",
    "JavaError", "NoContextError", "StartupTimeoutError", "UnknownFlagError",
]


def __getattr__(name: str):
    if name in _CONTEXT_NAMES:
        from . import context
        return getattr(context, name)
    raise AttributeError(f"module 'sparkorca' has no attribute {name!r}")

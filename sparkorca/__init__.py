"""sparkorca: one program on a laptop or a Spark cluster, with Ray and distributed DL."""

from ._version import __version__
from .context import OrcaContext, init_orca_context, orca_context, stop_orca_context
from .errors import (InvalidArgumentError, JavaError, NoContextError, OrcaError,
                     OrcaRuntimeError, StartupTimeoutError, UnknownArgumentError)

__all__ = [
    "__version__", "init_orca_context", "stop_orca_context", "orca_context", "OrcaContext",
    "OrcaError", "InvalidArgumentError", "UnknownArgumentError", "OrcaRuntimeError",
    "JavaError", "NoContextError", "StartupTimeoutError",
]

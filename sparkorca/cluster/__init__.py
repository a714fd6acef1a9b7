"""TFCluster: TensorFlowOnSpark's API for distributed TensorFlow and PyTorch on
Spark. Port a TFoS program by changing its imports::

    from sparkorca.cluster import TFCluster, TFNode, TFParallel, pipeline, dfutil, compat

The driver-side modules load on first use: the node processes on the executors
import parts of this package and must not pull in the driver.
"""

import importlib

from .roles import InputMode

_LAZY = {"TFCluster": ".TFCluster", "TFNode": ".TFNode", "TFParallel": ".TFParallel",
         "pipeline": ".pipeline", "dfutil": ".dfutil", "compat": ".compat"}

__all__ = ["TFCluster", "TFNode", "TFParallel", "pipeline", "dfutil", "compat", "InputMode",
           "run"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name], __name__)
    if name == "run":
        from .driver import run
        return run
    raise AttributeError(f"module 'sparkorca.cluster' has no attribute {name!r}")

"""TFCluster: TensorFlowOnSpark's API for distributed TensorFlow and PyTorch on
Spark. Port a TFoS program by changing its imports::

    from sparkorca.cluster import TFCluster, TFNode
"""

from . import TFCluster, TFNode
from .driver import run
from .roles import InputMode

__all__ = ["TFCluster", "TFNode", "InputMode", "run"]

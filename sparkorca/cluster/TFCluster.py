"""``TFCluster`` as TensorFlowOnSpark programs import it: ``TFCluster.run(...)``,
``TFCluster.InputMode``, and the ``TFCluster.TFCluster`` class."""

from .driver import TFCluster, run
from .roles import InputMode

__all__ = ["TFCluster", "InputMode", "run"]

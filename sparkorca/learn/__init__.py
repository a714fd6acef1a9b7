"""sparkorca.learn: Orca's Estimators. ``from sparkorca.learn.pytorch import Estimator``;
metrics in ``sparkorca.learn.metrics``; ``EveryEpoch`` in ``sparkorca.learn.trigger``."""

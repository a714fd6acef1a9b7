"""Orca's Keras Estimator: ``from sparkorca.learn.tf2 import Estimator``.

    est = Estimator.from_keras(model_creator=model_creator)   # returns a compiled model
    est.fit(df, epochs=2, batch_size=64, feature_cols=["features"], label_cols=["label"])
    est.evaluate(df, feature_cols=["features"], label_cols=["label"])
    est.predict(df, feature_cols=["features"])          # df + "prediction"

The workers train Keras 3 on its torch backend (``pip install 'sparkorca[keras]'``),
whatever backend the driver's Keras uses.
"""

from __future__ import annotations

from ...errors import InvalidArgumentError


class Estimator:
    @staticmethod
    def from_keras(*, model_creator=None, config=None, verbose=False, workers_per_node=1,
                   compile_args_creator=None, backend="spark", cpu_binding=False,
                   log_to_driver=True, model_dir=None, **kwargs):
        """An Estimator that trains ``model_creator(config)`` (a Keras model, compiled
        there or with ``compile_args_creator(config)``) with one worker per executor
        (``backend="spark"``: in Spark tasks) or per Ray node (``"ray"``: Ray actors)
        x ``workers_per_node``, in synchronous data-parallel steps: the workers'
        weights are identical after every step."""
        from ..spark_estimator import check_backend
        check_backend(backend)
        if cpu_binding:
            raise InvalidArgumentError("cpu_binding", cpu_binding, "False (Ray places the "
                                       "workers' threads)")
        if kwargs:
            raise InvalidArgumentError(next(iter(kwargs)), kwargs[next(iter(kwargs))],
                                       "one of from_keras' arguments")
        from .estimator import KerasSparkEstimator
        return KerasSparkEstimator(
            model_creator=model_creator, config=config, compile_args_creator=compile_args_creator,
            workers_per_node=workers_per_node, model_dir=model_dir, verbose=verbose,
            log_to_driver=log_to_driver, backend=backend)

    @staticmethod
    def latest_checkpoint(checkpoint_dir: str) -> str:
        from ..checkpoints import latest_checkpoint
        return latest_checkpoint(checkpoint_dir)


__all__ = ["Estimator"]

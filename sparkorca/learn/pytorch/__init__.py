"""Orca's PyTorch Estimator: ``from sparkorca.learn.pytorch import Estimator``.

    est = Estimator.from_torch(model=model_creator, optimizer=optimizer_creator,
                               loss=nn.CrossEntropyLoss(), metrics=[Accuracy()])
    est.fit(df, epochs=2, batch_size=64, feature_cols=["features"], label_cols=["label"])
    est.evaluate(df, feature_cols=["features"], label_cols=["label"])
    est.predict(df, feature_cols=["features"])          # df + "prediction"
"""

from __future__ import annotations


class Estimator:
    @staticmethod
    def from_torch(*, model=None, optimizer=None, loss=None, metrics=None,
                   scheduler_creator=None, config=None, workers_per_node=1, backend="spark",
                   model_dir=None, use_tqdm=False, sync_stats=True, log_to_driver=True):
        """An Estimator that trains ``model(config)`` with ``optimizer(model, config)``
        and ``loss`` (a torch loss, or a function (config) -> loss) under DDP, one
        worker per executor (``backend="spark"``: in Spark tasks) or per Ray node
        (``backend="ray"``: Ray actors on the context's Ray) x ``workers_per_node``.

        Statistics are always reduced over all workers (``sync_stats`` is accepted
        for Orca's programs and always in effect)."""
        from .estimator import PyTorchSparkEstimator
        return PyTorchSparkEstimator(
            model=model, optimizer=optimizer, loss=loss, metrics=metrics,
            scheduler_creator=scheduler_creator, config=config,
            workers_per_node=workers_per_node, model_dir=model_dir, use_tqdm=use_tqdm,
            sync_stats=sync_stats, log_to_driver=log_to_driver, backend=backend)

    @staticmethod
    def latest_checkpoint(checkpoint_dir: str) -> str:
        from .estimator import PyTorchSparkEstimator
        return PyTorchSparkEstimator.latest_checkpoint(checkpoint_dir)


__all__ = ["Estimator"]

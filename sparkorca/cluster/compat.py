"""TensorFlowOnSpark's ``compat``: helpers for end-user TensorFlow code that hide
API changes between TensorFlow versions, for Keras 3 / TensorFlow 2.16+.

TensorFlow is imported when a function is called, never with this module.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .. import _validate as check
from ..errors import InvalidArgumentError


def export_saved_model(model, export_dir, is_chief: bool = False) -> None:
    """Export ``model`` as a SavedModel (tag "serve", signature "serving_default")
    to ``export_dir`` from the chief.

    Call it on **every** worker: under MultiWorkerMirroredStrategy saving takes
    part in collective ops, so a worker that skips it blocks the others. The
    chief (``is_chief=True``) writes ``export_dir``; the others write to a temp
    dir that is removed afterwards (TFoS left a ``worker_model`` dir in the
    executor's cwd). Keras 3 models are saved with ``model.export``; anything
    else (a Keras 2 model, a ``tf.Module``) with ``tf.saved_model.save``.

    Examples
    --------
    >>> compat.export_saved_model(model, args.export_dir, ctx.job_name == "chief")  # doctest: +SKIP
    """
    if not isinstance(export_dir, (str, os.PathLike)) or not os.fspath(export_dir):
        raise InvalidArgumentError("export_dir", export_dir, "a directory path or URI")
    check.boolean("is_chief", is_chief)
    if is_chief:
        _save(model, os.fspath(export_dir))
        return
    scratch = tempfile.mkdtemp(prefix="sparkorca-worker-model-")
    try:
        _save(model, os.path.join(scratch, "model"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _save(model, path: str) -> None:
    if callable(getattr(model, "export", None)):
        model.export(path)
    else:
        import tensorflow as tf
        tf.saved_model.save(model, path)


def disable_auto_shard(options) -> None:
    """Turn off tf.data auto-sharding in ``options`` (a ``tf.data.Options``, changed
    in place): a dataset fed from Spark is already this worker's own share.

    Examples
    --------
    >>> options = tf.data.Options()  # doctest: +SKIP
    >>> compat.disable_auto_shard(options)  # doctest: +SKIP
    >>> ds = ds.with_options(options)  # doctest: +SKIP
    """
    import tensorflow as tf
    if not isinstance(options, tf.data.Options):
        raise InvalidArgumentError("options", options, "a tf.data.Options")
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF


def is_gpu_available() -> bool:
    """Whether TensorFlow sees a GPU in this process."""
    import tensorflow as tf
    return len(tf.config.list_physical_devices("GPU")) > 0


__all__ = ["export_saved_model", "disable_auto_shard", "is_gpu_available"]

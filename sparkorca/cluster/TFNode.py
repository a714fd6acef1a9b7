"""``TFNode`` as TensorFlowOnSpark programs import it: ``TFNode.DataFeed(ctx.mgr, ...)``,
``TFNode.hdfs_path(ctx, path)`` and ``TFNode.release_port(ctx)``.

TFoS's TensorFlow 1.x helpers (``start_cluster_server``, ``export_saved_model``)
and its module-level feed functions (``next_batch``, ``batch_results``,
``terminate``) raise, as they did in TFoS under TensorFlow 2, and say what
replaces them.
"""

from __future__ import annotations

from ..errors import OrcaRuntimeError
from .feed import DataFeed
from .node_context import absolute_path, release_port


def hdfs_path(ctx, path: str) -> str:
    """``path`` with the cluster's filesystem scheme (see ``ctx.absolute_path``);
    only ``ctx.defaultFS`` and ``ctx.working_dir`` are read."""
    return absolute_path(ctx.defaultFS, ctx.working_dir, path)


def start_cluster_server(ctx, num_gpus: int = 1, rdma: bool = False):
    """TensorFlow 1.x's ``tf.train.Server`` for this node: gone, raises."""
    raise OrcaRuntimeError(
        "TFNode.start_cluster_server() / ctx.start_cluster_server() is TensorFlow 1.x API "
        "(TensorFlowOnSpark raised 'DEPRECATED' here under TensorFlow 2 too). sparkorca sets "
        "TF_CONFIG on every node, so create a tf.distribute strategy instead, e.g. "
        "tf.distribute.MultiWorkerMirroredStrategy(); a ps node serves with "
        "tf.distribute.Server(ctx.cluster_spec, job_name=ctx.job_name, "
        "task_index=ctx.task_index).join()")


def export_saved_model(sess, export_dir, tag_set, signatures) -> None:
    """TensorFlow 1.x's SavedModelBuilder export of a session: gone, raises."""
    raise OrcaRuntimeError(
        "TFNode.export_saved_model(sess, ...) / ctx.export_saved_model() is TensorFlow 1.x "
        "API (TensorFlowOnSpark raised 'DEPRECATED' here under TensorFlow 2 too). Export a "
        "Keras model with sparkorca.cluster.compat.export_saved_model(model, export_dir, "
        "is_chief=ctx.job_name == 'chief') on every worker, or model.export(export_dir) "
        "(Keras 3) on one")


def _use_data_feed(name: str, call: str):
    return OrcaRuntimeError(
        f"TFNode.{name}(mgr, ...) is deprecated, as in TensorFlowOnSpark: use TFNode.DataFeed "
        f"instead, e.g. feed = TFNode.DataFeed(ctx.mgr); feed.{call}")


def next_batch(mgr, batch_size, qname: str = "input"):
    raise _use_data_feed("next_batch", "next_batch(batch_size)")


def batch_results(mgr, results, qname: str = "output"):
    raise _use_data_feed("batch_results", "batch_results(results)")


def terminate(mgr, qname: str = "input"):
    raise _use_data_feed("terminate", "terminate()")


__all__ = ["DataFeed", "hdfs_path", "release_port", "start_cluster_server",
           "export_saved_model", "next_batch", "batch_results", "terminate"]

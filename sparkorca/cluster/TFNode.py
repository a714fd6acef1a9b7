"""``TFNode`` as TensorFlowOnSpark programs import it: ``TFNode.DataFeed(ctx.mgr, ...)``
and ``TFNode.hdfs_path(ctx, path)``."""

from .feed import DataFeed
from .node_context import absolute_path


def hdfs_path(ctx, path: str) -> str:
    """``path`` with the cluster's filesystem scheme (see ``ctx.absolute_path``)."""
    return absolute_path(ctx.defaultFS, ctx.working_dir, path)


__all__ = ["DataFeed", "hdfs_path"]

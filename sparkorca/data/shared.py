"""SharedValue: a read-only value sent to the executors once (a Spark broadcast)."""

from __future__ import annotations

from typing import Any


class SharedValue:
    """A value every executor reads, shipped once per executor, not once per task.

    Pass it to ``XShards.transform_shard`` as an argument and read ``.value``
    inside the function.

    Examples
    --------
    >>> from sparkorca.data import SharedValue
    >>> lookup = SharedValue({"a": 1, "b": 2})
    >>> shards.transform_shard(lambda df, m: df.assign(code=df.key.map(m.value)), lookup)
    >>> lookup.unpersist()
    """

    def __init__(self, data: Any):
        from .shards import _spark_context
        self.broadcast_data = _spark_context().broadcast(data)

    @property
    def value(self) -> Any:
        """The value, on the driver or on an executor."""
        return self.broadcast_data.value

    def unpersist(self) -> None:
        """Drop the executors' copies (they are sent again if used later)."""
        self.broadcast_data.unpersist()

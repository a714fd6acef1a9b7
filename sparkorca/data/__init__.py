"""sparkorca.data: Orca's XShards, read_* into pandas shards, and Spark <-> Ray hand-off.

    from sparkorca.data import XShards, SharedValue
    from sparkorca.data.pandas import read_csv
    shards = read_csv("hdfs:///logs/*.csv")            # OrcaContext.pandas_read_backend
    shards.transform_shard(clean).to_spark_df()
    numpy_shards = XShards.partition({"x": x, "y": y})
    ds = shards.to_ray_dataset()                       # with Ray on Spark

Names are imported on first use, so that executors that unpickle a function of
``sparkorca.data.shards`` load nothing else of the package.
"""

import importlib
from typing import Any

_NAMES = {
    "XShards": "shards", "SparkXShards": "shards", "Shards": "shards",
    "SharedValue": "shared",
    "read_csv": "readers", "read_json": "readers", "read_parquet": "readers",
    "spark_df_to_ray_dataset": "to_ray",
}
_MODULES = ("pandas", "transformer", "file")

__all__ = ["XShards", "SparkXShards", "Shards", "SharedValue", "read_csv", "read_json",
           "read_parquet", "spark_df_to_ray_dataset"]


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + list(_MODULES))

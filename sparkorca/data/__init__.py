"""sparkorca.data: distributed pandas shards, and Spark <-> Ray data hand-off.

    from sparkorca import data
    shards = data.read_csv("hdfs:///logs/*.csv")       # OrcaContext.pandas_read_backend
    shards.transform_shard(clean).to_spark_df()
    ds = shards.to_ray_dataset()                       # with Ray on Spark
"""

from .readers import read_csv, read_json, read_parquet
from .shards import Shards
from .to_ray import spark_df_to_ray_dataset

__all__ = ["Shards", "read_csv", "read_json", "read_parquet", "spark_df_to_ray_dataset"]

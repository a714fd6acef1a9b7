"""A BigDL Orca data-preparation program, ported by changing its imports only
(``bigdl.orca`` -> ``sparkorca``): read CSV into XShards, clean each shard with a
broadcast lookup table, scale with MinMaxScaler, partition by a column, split into
train and test, hand the training rows to Spark; and turn numpy arrays into
XShards, the input Orca's Estimators take.

    python examples/orca_data_prep.py [--cluster-mode local-cluster] [--work-dir DIR]

It writes its own small input files under ``--work-dir`` (a temporary directory by
default); nothing is downloaded.
"""
import argparse
import os
import tempfile

import numpy as np
import pandas as pd

from sparkorca import OrcaContext, init_orca_context, stop_orca_context
from sparkorca.data import SharedValue, XShards
from sparkorca.data.pandas import read_csv
from sparkorca.data.transformer import MinMaxScaler


def write_input(work_dir):
    """Two CSV files of 100 houses each, with a few missing prices."""
    rng = np.random.default_rng(0)
    csv_dir = os.path.join(work_dir, "houses")
    os.makedirs(csv_dir, exist_ok=True)
    for part in range(2):
        ids = np.arange(part * 100, part * 100 + 100)
        prices = rng.uniform(100_000, 900_000, size=100).round(0)
        prices[ids % 37 == 1] = np.nan  # missing values to fill
        pd.DataFrame({
            "ID": ids,
            "sale_price": prices,
            "rooms": rng.integers(1, 7, size=100),
            "location": rng.choice(["north", "south", "east", "west", "centre"], size=100),
        }).to_csv(os.path.join(csv_dir, f"houses-{part}.csv"), index=False)
    return csv_dir


def clean(df, region_codes):
    """Fill missing prices and encode the location with a table shared by all tasks."""
    df = df.copy()
    df["sale_price"] = df["sale_price"].fillna(df["sale_price"].median())
    df["region"] = df["location"].map(region_codes.value).astype("int64")
    return df


def train_test(df):
    """One house in five, by ID, is held out for testing."""
    held_out = df["ID"] % 5 == 0
    return df[~held_out], df[held_out]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-mode", default="local")
    ap.add_argument("--work-dir", default=None)
    args = ap.parse_args()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="orca-data-prep-")
    csv_dir = write_input(work_dir)

    init_orca_context(cluster_mode=args.cluster_mode, cores=2 if args.cluster_mode == "local"
                      else 1, num_nodes=2, memory="1g")
    try:
        OrcaContext.pandas_read_backend = "spark"
        shards = read_csv(csv_dir, dtype={"rooms": "int32"})
        print(f"read {len(shards)} rows in {shards.num_partitions()} partitions, columns "
              f"{shards.get_schema()['columns']}")

        codes = SharedValue({"north": 0, "south": 1, "east": 2, "west": 3, "centre": 4})
        shards = shards.transform_shard(clean, codes)
        print(f"most expensive house: {shards.max_values('sale_price'):.0f}")

        scaler = MinMaxScaler(inputCol=["sale_price", "rooms"], outputCol="scaled")
        shards = scaler.fit_transform(shards)
        shards = shards.transform_shard(
            lambda df: df.assign(price_scaled=[v[0] for v in df["scaled"]],
                                 rooms_scaled=[v[1] for v in df["scaled"]])
                         .drop(columns=["scaled"]))

        shards = shards.partition_by(cols="location", num_partitions=4)
        train, test = shards.transform_shard(train_test).split()
        print(f"train rows: {len(train)}, test rows: {len(test)}")

        train_df = train.to_spark_df()
        by_location = train_df.groupBy("location").count().orderBy("location").collect()
        print("training rows per location:", {r["location"]: r["count"] for r in by_location})

        # numpy arrays -> XShards of {"x": ..., "y": ...}, as Orca's Estimators take them
        rng = np.random.default_rng(1)
        data = {"x": rng.normal(size=(200, 8)).astype(np.float32),
                "y": rng.integers(0, 2, size=(200, 1)).astype(np.float32)}
        numpy_shards = XShards.partition(data, num_shards=4)
        print(f"numpy shards: {numpy_shards.num_partitions()} partitions, "
              f"{len(numpy_shards)} rows, first x {numpy_shards.first()['x'].shape}")
    finally:
        stop_orca_context()


if __name__ == "__main__":
    main()

"""Orca's ``bigdl.orca.data.pandas``: read_csv, read_json and read_parquet into XShards
of pandas DataFrames (see ``sparkorca.data.readers``)."""

from ..readers import read_csv, read_json, read_parquet

__all__ = ["read_csv", "read_json", "read_parquet"]

"""The DuckDB warehouse: schema (`schema`), partition-replace writes (`writes`), reads (`reads`). No Dagster.

Every table is keyed by month; re-writing a month replaces that month's rows in one transaction.
"""

from batch_assets.warehouse.reads import label_accuracy, nearest_documents, read_documents, read_table
from batch_assets.warehouse.schema import (
    DEFAULT_DUCKDB_PATH,
    EMBEDDINGS_TABLE,
    PIPELINE_TABLES,
    TABLES,
    TableDeclaration,
    WarehouseError,
    connect,
    embedding_dims,
    ensure_schema,
    polars_schema,
    table_columns,
    table_exists,
)
from batch_assets.warehouse.writes import (
    replace_partition,
    replace_partition_from_frames,
    replace_partition_from_parquet,
)

__all__ = [
    "DEFAULT_DUCKDB_PATH",
    "EMBEDDINGS_TABLE",
    "PIPELINE_TABLES",
    "TABLES",
    "TableDeclaration",
    "WarehouseError",
    "connect",
    "embedding_dims",
    "ensure_schema",
    "label_accuracy",
    "nearest_documents",
    "polars_schema",
    "read_documents",
    "read_table",
    "replace_partition",
    "replace_partition_from_frames",
    "replace_partition_from_parquet",
    "table_columns",
    "table_exists",
]

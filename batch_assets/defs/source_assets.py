"""Source assets: the month's documents and company metrics, copied into the warehouse."""


import dagster as dg

from batch_assets import sources, warehouse
from batch_assets.defs.partitions import partition_month
from batch_assets.defs.resources import SourcesResource, WarehouseResource
from batch_assets.defs.table_schema import table_schema

DUCKDB_POOL = "duckdb"


def build_source_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="raw_documents", partitions_def=partitions_def, group_name="sources", kinds={"polars", "duckdb"},
        pool=DUCKDB_POOL,
        description="The month's documents (id, text, created_at, gold label). Default: Rotten Tomatoes reviews "
                    "spread over 2024; set BATCH_ASSETS_DOCUMENTS_PATH to read your own CSV / Parquet / JSONL.",
        metadata={"dagster/column_schema": table_schema("raw_documents")},
    )
    def raw_documents(context: dg.AssetExecutionContext, sources_config: SourcesResource,
                      warehouse_db: WarehouseResource) -> dg.MaterializeResult:
        month = partition_month(context)
        loaded = sources.load_documents(
            month, source=sources.DocumentSource(path=sources_config.documents_path),
            limit_per_month=sources_config.docs_per_month,
        )
        for warning in loaded.warnings:
            context.log.warning(warning)
        with warehouse_db.connect() as con:
            rows = warehouse.replace_partition(con, "raw_documents", month, loaded.frame.drop("month"))
        labels = loaded.frame["label"].value_counts().sort("label").iter_rows() if rows else []
        note = {}
        if not rows:
            note["note"] = (f"no documents in {month:%Y-%m}: " + (
                f"the bundled reviews cover {sources.DEFAULT_FIRST_MONTH[:7]} to {sources.DEFAULT_LAST_MONTH[:7]}"
                if sources_config.documents_path is None else f"none of {sources_config.documents_path} falls in it"))
            context.log.warning(note["note"])
        return dg.MaterializeResult(metadata={
            **note,
            "dagster/row_count": rows,
            "dropped_empty_texts": loaded.dropped_empty_texts,
            "gold_labels": {str(label): n for label, n in labels},
            "source": sources_config.documents_path or "Rotten Tomatoes reviews (bundled)",
        })

    @dg.asset(
        name="company_metrics", partitions_def=partitions_def, group_name="sources", kinds={"polars", "duckdb"},
        pool=DUCKDB_POOL,
        description="Monthly metrics per company (revenue, margin, churn, NPS...). Default: a deterministic "
                    "generator; set BATCH_ASSETS_COMPANY_METRICS_PATH to read your own CSV / Parquet.",
        metadata={"dagster/column_schema": table_schema("company_metrics")},
    )
    def company_metrics(context: dg.AssetExecutionContext, sources_config: SourcesResource,
                        warehouse_db: WarehouseResource) -> dg.MaterializeResult:
        month = partition_month(context)
        frame = sources.company_metrics_for_month(month, path=sources_config.company_metrics_path)
        with warehouse_db.connect() as con:
            rows = warehouse.replace_partition(con, "company_metrics", month, frame)
        return dg.MaterializeResult(metadata={"dagster/row_count": rows, "companies": frame["company"].to_list()})

    return [raw_documents, company_metrics]

"""A month's output rows: its items joined with their successful answers, built with the settings the requests
were built with (from the ledger), never the declaration's defaults. No Dagster."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Final

import duckdb
import polars as pl

from batch_assets.batching.protocol import EMBEDDINGS_URL
from batch_assets.batching.results import RESULT_SCHEMA
from batch_assets.pipelines.accounting import ItemState
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings
from batch_assets.warehouse.answers import duplicated_ids, stream_answered_items
from batch_assets.warehouse.writes import replace_partition_from_frames

# Rows per chunk handed to a pipeline's build_outputs (~3 MB of chat answers, ~25 MB of 1536-float vectors):
# smaller chunks cost a little time, bigger ones memory.
_CHUNK_ROWS: Final = 16_384
_EMBEDDING_CHUNK_ROWS: Final = 4_096


class MissingResultsError(RuntimeError):
    """A result file the ledger points at is gone; the message says how to get it back."""


def _successes(classified: pl.DataFrame) -> pl.DataFrame:
    return classified.filter(pl.col("item_state") == ItemState.SUCCEEDED.value).select(
        "item_id", "batch_id", "custom_id", "attempt")


def _results_files(successes: pl.DataFrame, results_dir: Path) -> dict[str, Path]:
    files = {}
    for batch_id in successes["batch_id"].unique().sort().to_list():
        path = results_dir / f"{batch_id}.parquet"
        if not path.is_file():
            raise MissingResultsError(
                f"the results of batch {batch_id} ({path}) are gone: launch the month's collect job again with "
                "its batches still at the provider, or re-materialize the month to answer those items anew")
        files[batch_id] = path
    return files


def write_output_rows(con: duckdb.DuckDBPyConnection, spec: PipelineSpec, settings: SubmissionSettings,
                      classified: pl.DataFrame, month: date, results_dir: Path) -> int:
    """Replaces the month of the pipeline's output table with rows built from its successful answers; returns
    the rows written.

    The month's source rows and answers are joined in DuckDB and reach the pipeline's `build_outputs` in chunks
    (row-wise builders: each chunk's rows depend on that chunk only); the month's rows are written in one
    transaction. A month of any size fits in a bounded amount of memory.
    """
    duplicated = duplicated_ids(con, spec.source, spec.item_id_column, month)
    if duplicated:
        raise ValueError(f"{spec.source} has items with the same {spec.item_id_column} in one month "
                         f"(e.g. {duplicated}): each item needs its own id")
    successes = _successes(classified)
    files = _results_files(successes, results_dir)
    chunk_rows = _EMBEDDING_CHUNK_ROWS if spec.endpoint == EMBEDDINGS_URL else _CHUNK_ROWS
    # DuckDB pulls each chunk's rows as they are built, in one INSERT (writing them to Parquet files first and
    # loading those took a second more for a month of vectors).
    return replace_partition_from_frames(con, spec.output_table, month, (
        spec.build_outputs(joined, settings.pipeline) for joined in stream_answered_items(
            con, spec.source, spec.item_id_column, month, successes, files, RESULT_SCHEMA, chunk_rows=chunk_rows,
            source_columns=spec.output_source_columns)))

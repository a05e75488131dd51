"""A month's output rows: its items joined with their successful answers, built with the settings the requests
were built with (from the ledger), never the declaration's defaults. No Dagster."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from batch_assets.batching.results import RESULT_SCHEMA
from batch_assets.pipelines.accounting import ItemState
from batch_assets.pipelines.plan import item_frame
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings

PAYLOAD_COLUMNS = tuple(RESULT_SCHEMA)


class MissingResultsError(RuntimeError):
    """A result file the ledger points at is gone; the message says how to get it back."""


def success_payloads(classified: pl.DataFrame, results_dir: Path) -> pl.DataFrame:
    """The answer of every succeeded item: item_id, batch_id, attempt and the payload columns."""
    successes = classified.filter(pl.col("item_state") == ItemState.SUCCEEDED.value).select(
        "item_id", "batch_id", "custom_id", "attempt")
    frames = []
    for (batch_id,), wanted in successes.group_by("batch_id"):
        path = results_dir / f"{batch_id}.parquet"
        if not path.is_file():
            raise MissingResultsError(
                f"the results of batch {batch_id} ({path}) are gone: launch the month's collect job again with "
                "its batches still at the provider, or re-materialize the month to answer those items anew")
        payload = pl.scan_parquet(path).select(PAYLOAD_COLUMNS).join(
            wanted.lazy().select("custom_id", "item_id", "attempt"), on="custom_id", how="inner")
        frames.append(payload.with_columns(pl.lit(batch_id).alias("batch_id")).collect())
    if not frames:
        return RESULT_SCHEMA.to_frame().with_columns(pl.lit(None, pl.String).alias("item_id"),
                                                     pl.lit(None, pl.Int32).alias("attempt"),
                                                     pl.lit(None, pl.String).alias("batch_id"))
    return pl.concat(frames, how="vertical_relaxed")


def output_rows(spec: PipelineSpec, settings: SubmissionSettings, items: pl.DataFrame, classified: pl.DataFrame,
                month: date, results_dir: Path) -> pl.DataFrame:
    """The pipeline's output table rows for the month."""
    items = item_frame(spec, items)
    payloads = success_payloads(classified, results_dir).drop("custom_id")
    joined = items.join(payloads, on="item_id", how="inner")
    return spec.build_outputs(joined, settings.pipeline).select(pl.lit(month).alias("month"), pl.all())

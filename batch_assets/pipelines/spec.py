"""One declaration per pipeline: everything the platform needs to run it as batch assets."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import duckdb
import polars as pl

from batch_assets.batching.protocol import Endpoint
from batch_assets.batching.request_files import PreparedRequest

SourceName = Literal["raw_documents", "company_metrics"]


@dataclass(frozen=True)
class PipelineSettings:
    """What a user may change per run (the Dagster launchpad shows these as run config)."""

    model: str
    system_prompt: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    dimensions: int | None = None
    labels: tuple[str, ...] = ()
    # Rough output tokens per request, for the estimate before submitting (actual usage comes after).
    expected_output_tokens: int = 0


# items (one row per item of the month, with an `item_id` column) -> requests, streamed
RequestBuilder = Callable[[pl.DataFrame, PipelineSettings], Iterator[PreparedRequest]]
# items joined with their results (outcome, content, embedding, ...) -> rows of the output table
OutputBuilder = Callable[[pl.DataFrame, PipelineSettings], pl.DataFrame]


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    metadata: dict[str, Any]
    description: str = ""
    markdown: dict[str, str] = field(default_factory=dict)  # shown rendered (tables)


@dataclass(frozen=True)
class QualityCheck:
    """A data-quality check over a month of the output table (Dagster shows it as an asset check)."""

    name: str
    description: str
    run: Callable[[duckdb.DuckDBPyConnection, date], CheckOutcome]
    blocking: bool = False  # True: a failure is an error, not a warning


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    description: str
    endpoint: Endpoint
    source: SourceName
    item_id_column: str  # the source column that identifies an item within a month
    output_table: str
    output_columns: Mapping[str, str]  # column -> description, shown as the table schema in the UI
    defaults: PipelineSettings
    build_requests: RequestBuilder
    build_outputs: OutputBuilder
    checks: tuple[QualityCheck, ...] = field(default=())
    # For an output table the warehouse does not ship: column -> DuckDB type (with month DATE), and its key.
    output_schema: Mapping[str, str] | None = None
    output_key: tuple[str, ...] = ()

    @property
    def requests_asset(self) -> str:
        return f"{self.name}_requests"

    @property
    def batches_asset(self) -> str:
        return f"{self.name}_batches"

    @property
    def results_asset(self) -> str:
        return f"{self.name}_results"

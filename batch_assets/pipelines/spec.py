"""One declaration per pipeline: everything the platform needs to run it as batch assets."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import duckdb
import orjson
import polars as pl

from batch_assets.batching.protocol import Endpoint
from batch_assets.batching.request_files import BatchLimits, PreparedRequest
from batch_assets.warehouse import TableDeclaration

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


@dataclass(frozen=True)
class RetryPolicy:
    """How a month's failed items are retried and judged (run config; stored with each plan)."""

    max_attempts: int = 3  # an item is submitted at most this many times
    retry_delay_seconds: float = 60.0  # wait after a collect before resubmitting retryable items
    max_failure_share: float = 0.05  # above this share of final failures the month's check fails

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.retry_delay_seconds < 0:
            raise ValueError(f"retry_delay_seconds must be >= 0, got {self.retry_delay_seconds}")
        if not 0 <= self.max_failure_share <= 1:
            raise ValueError(f"max_failure_share must be within [0, 1], got {self.max_failure_share}")


@dataclass(frozen=True)
class BudgetPolicy:
    """What a submission may cost before it is refused (run config; stored with each plan).

    Caps are on the upper bound of the estimate (input tokens exact, output at each request's max tokens), at
    batch prices; None means no cap. The month cap covers every pipeline of the month: what its collected batches
    cost plus the upper bound of what is still in flight, plus this submission.
    """

    max_cost_per_submission_usd: float | None = None
    max_cost_per_month_usd: float | None = None
    use_cache: bool = True  # answer identical requests already answered (any month or pipeline) from the warehouse

    def __post_init__(self) -> None:
        for name in ("max_cost_per_submission_usd", "max_cost_per_month_usd"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (or None for no cap), got {value}")


SETTINGS_FORMAT_VERSION = 1


@dataclass(frozen=True)
class SubmissionSettings:
    """Everything a plan was built with. Stored in the ledger as versioned JSON (never a pickle), so a batch
    submitted by this release is collected, retried and turned into rows by the next one."""

    pipeline: PipelineSettings
    limits: BatchLimits = field(default_factory=BatchLimits)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    budget: BudgetPolicy = field(default_factory=BudgetPolicy)

    def to_json(self) -> str:
        limits = {f.name: getattr(self.limits, f.name) for f in dataclasses.fields(self.limits)}
        limits["tokens_per_file_by_model"] = dict(self.limits.tokens_per_file_by_model)
        return orjson.dumps({"version": SETTINGS_FORMAT_VERSION, "pipeline": dataclasses.asdict(self.pipeline),
                             "limits": limits, "retry": dataclasses.asdict(self.retry),
                             "budget": dataclasses.asdict(self.budget)},
                            option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> SubmissionSettings:
        """Reads settings written by this or an earlier release. Fields this release no longer has are ignored
        (with a warning); fields it added take their defaults."""
        raw = orjson.loads(text)
        version = raw.get("version", 1)
        if version > SETTINGS_FORMAT_VERSION:
            raise ValueError(f"settings format {version} is newer than this release reads "
                             f"({SETTINGS_FORMAT_VERSION}): upgrade batch_assets")
        pipeline = _known_fields(PipelineSettings, raw.get("pipeline", {}))
        pipeline["labels"] = tuple(pipeline.get("labels") or ())
        return cls(PipelineSettings(**pipeline), BatchLimits(**_known_fields(BatchLimits, raw.get("limits", {}))),
                   RetryPolicy(**_known_fields(RetryPolicy, raw.get("retry", {}))),
                   BudgetPolicy(**_known_fields(BudgetPolicy, raw.get("budget", {}))))


def _known_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        warnings.warn(f"stored {cls.__name__} has fields this release does not know, ignored: {unknown}",
                      stacklevel=3)
    return {k: v for k, v in values.items() if k in known}


# items (one row per item of the month, with an `item_id` column) -> requests, streamed
RequestBuilder = Callable[[pl.DataFrame, PipelineSettings], Iterable[PreparedRequest]]
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
    # The source columns build_outputs reads besides item_id (None: all of them). Naming them keeps a month's
    # texts out of the output step when the outputs do not show them.
    output_source_columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.output_table_declaration()  # a declaration the warehouse cannot hold fails here, saying why

    def output_table_declaration(self) -> TableDeclaration | None:
        """The output table for the warehouse to create, when it is not one the warehouse ships."""
        if self.output_schema is None:
            return None
        return TableDeclaration(self.output_table, dict(self.output_schema), self.output_key or ("month",))

    @property
    def requests_asset(self) -> str:
        return f"{self.name}_requests"

    @property
    def batches_asset(self) -> str:
        return f"{self.name}_batches"

    @property
    def results_asset(self) -> str:
        return f"{self.name}_results"

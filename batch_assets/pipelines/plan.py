"""Planning a month: which items need an answer, written to content-addressed request files. No Dagster.

A plan is one submission attempt of a pipeline-month. The first plan submits every item; a later one (a user
materializing the month again) only the items whose current body has no successful answer yet, and with new
settings that is every item again, since their bodies changed. While a plan is in flight no new plan is made:
its items would be paid twice. Retries are planned by :mod:`batch_assets.pipelines.collect`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from batch_assets.batching.pricing import Cost, actual_cost
from batch_assets.batching.request_files import (
    PlannedFiles,
    PreparedRequest,
    RequestFile,
    SkippedRequest,
    plan_request_files,
    reread_requests,
)
from batch_assets.batching.request_types import REQUEST_ROW_SCHEMA
from batch_assets.ledger.records import NewFile, PlanKind, PlanState, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.budget import Estimate, check_caps, estimate_plan, expected_output, month_commitment
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings
from batch_assets.warehouse.items import (
    CACHE,
    CACHED_ANSWER_SCHEMA,
    REUSED,
    SUBMITTED,
    cached_answers,
    succeeded_bodies,
    write_cache_outcomes,
    write_plan_items,
)

IN_FLIGHT_STATES = (PlanState.SUBMITTING, PlanState.SUBMITTED)


@dataclass(frozen=True)
class PlanOutcome:
    """What planning did; `plan` is None when a plan in flight (`blocking`) kept it from planning."""

    plan: StoredPlan | None
    blocking: StoredPlan | None
    n_items: int
    n_reused: int  # items whose current body already has a successful answer this month
    files: tuple[RequestFile, ...]
    estimate: Estimate | None  # None when the model has no price in the table
    message: str
    cache_hits: int = 0  # items answered from an identical request's earlier answer (another month or pipeline)
    cache_saved: Cost | None = None  # what those answers cost when they were first paid for

    @property
    def n_requests(self) -> int:
        return sum(f.n_requests for f in self.files)

    @property
    def input_tokens(self) -> int:
        return sum(f.input_tokens for f in self.files)

    @property
    def n_bytes(self) -> int:
        return sum(f.n_bytes for f in self.files)


def month_key(month: date) -> str:
    """How the ledger names a month (the partition key)."""
    return month.isoformat()


def item_frame(spec: PipelineSpec, items: pl.DataFrame) -> pl.DataFrame:
    """The source rows with their `item_id` (a string), checked to be unique."""
    if spec.item_id_column not in items.columns:
        raise ValueError(f"{spec.source} has no {spec.item_id_column!r} column; found {items.columns}")
    items = items.with_columns(pl.col(spec.item_id_column).cast(pl.String).alias("item_id"))
    duplicated = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique().head(3).to_list()
    if duplicated:
        raise ValueError(f"{spec.source} has items with the same {spec.item_id_column} in one month "
                         f"(e.g. {duplicated}): each item needs its own id")
    return items


def plan_month(spec: PipelineSpec, settings: SubmissionSettings, items: pl.DataFrame, month: date, *,
               ledger: Ledger, con: duckdb.DuckDBPyConnection, requests_dir: Path, results_dir: Path | None = None,
               run_id: str | None = None) -> PlanOutcome:
    """Plans the month's next submission with `settings` (holding the month's lease while it does).

    Raises :class:`~batch_assets.pipelines.budget.BudgetExceeded` (nothing recorded, nothing uploaded) when the
    upper estimate is over a cap.
    """
    items = item_frame(spec, items)
    key = month_key(month)
    stem = f"{spec.name}-{month:%Y-%m}"
    with ledger.month_lease(spec.name, key):
        in_flight = ledger.plans(spec.name, key, states=IN_FLIGHT_STATES)
        if in_flight:
            blocking = in_flight[-1]
            return PlanOutcome(None, blocking, items.height, 0, (), None, (
                f"attempt {blocking.attempt} of {spec.name} {month:%Y-%m} is in flight ({blocking.n_requests} "
                "requests): nothing new was planned, so nothing is paid twice. The batch sensor collects it; "
                f"to start over, cancel it first (batch-assets batches cancel --pipeline {spec.name} "
                f"--month {month:%Y-%m})"))
        done = succeeded_bodies(con, spec.name, month)
        planned = plan_request_files(
            spec.build_requests(items, settings.pipeline), requests_dir, limits=settings.limits, file_stem=stem,
            keep=(lambda item_id, body_sha: (item_id, body_sha) not in done) if done else None)
        submitted = submitted_rows(planned.files)
        _check_items(submitted["item_id"], planned.skipped, items)
        hits = _NO_HITS
        if settings.budget.use_cache and planned.files and results_dir is not None:
            hits = _cache_hits(con, submitted, results_dir)
            if hits.height:
                planned = _without(planned, set(hits["our_custom_id"].to_list()), requests_dir, settings, stem)
                submitted = submitted_rows(planned.files)
        guess = expected_output(con, spec.name, settings.pipeline.model, settings.pipeline.expected_output_tokens)
        estimate = estimate_plan(settings.pipeline.model, planned.files, guess)
        check_caps(settings.budget, estimate, pipeline=spec.name, month=month,
                   committed=month_commitment(ledger, con, month), requests_asset=spec.requests_asset)
        attempt = ledger.next_attempt(spec.name, key)
        kind = PlanKind.INITIAL if attempt == 1 else PlanKind.RERUN
        plan = ledger.add_plan(
            pipeline=spec.name, month=key, attempt=attempt, kind=kind, endpoint=spec.endpoint,
            settings=settings.to_json(), n_items=items.height, files=[ledger_file(f) for f in planned.files],
            estimate=estimate.to_json() if estimate else None, run_id=run_id)
        skipped = [(s.item_id, s.custom_id, s.body_sha256, s.input_tokens, REUSED) for s in planned.skipped]
        skipped += [(item_id, cid, body, 0, CACHE) for item_id, cid, body in hits.select(
            "item_id", "our_custom_id", "body_sha256").iter_rows()]
        try:
            write_plan_items(con, spec.name, month, plan.plan_id, plan_rows(attempt, submitted, skipped))
            if hits.height:
                write_cache_outcomes(con, spec.name, month, plan.plan_id, attempt, settings.pipeline.model, hits)
        except BaseException:
            ledger.set_plan_state(plan.plan_id, PlanState.SUPERSEDED)
            raise
        if not planned.files:  # every item already answered: nothing to submit, nothing to wait for
            ledger.set_plan_state(plan.plan_id, PlanState.COLLECTED)
        saved = _saved(hits, settings.pipeline.model)
        message = (f"attempt {attempt}: {sum(f.n_requests for f in planned.files)} of {items.height} items to "
                   f"submit in {len(planned.files)} file(s); {len(planned.skipped)} already answered this month"
                   + (f", {hits.height} answered from the cache" if hits.height else ""))
        return PlanOutcome(plan, None, items.height, len(planned.skipped), tuple(planned.files), estimate, message,
                           hits.height, saved)


_NO_HITS = pl.DataFrame(schema={"item_id": pl.String, "our_custom_id": pl.String, **CACHED_ANSWER_SCHEMA})


def submitted_rows(files: Sequence[RequestFile]) -> pl.DataFrame:
    """The requests of `files` as columns: item_id, custom_id, body_sha256, file_sha256, input_tokens (one frame
    for every check and write of a plan, put together from the files' own columns without copying them)."""
    # Each file's hash repeated without a string per row (80 MB less per million rows); no files: no rows.
    return pl.concat([f.requests.select(
        "item_id", "custom_id", "body_sha256", pl.repeat(f.sha256, f.n_requests, dtype=pl.String).alias("file_sha256"),
        "input_tokens") for f in files] or [REQUEST_ROW_SCHEMA.to_frame().select(
            "item_id", "custom_id", "body_sha256", pl.lit(None, pl.String).alias("file_sha256"), "input_tokens")],
        rechunk=False)


def _cache_hits(con: duckdb.DuckDBPyConnection, submitted: pl.DataFrame, results_dir: Path) -> pl.DataFrame:
    """Requests about to be submitted that an identical earlier request already answered (its payload still on
    disk): our item_id / custom_id with the earlier answer's columns."""
    ours = submitted.select("item_id", pl.col("custom_id").alias("our_custom_id"), "body_sha256")
    answers = cached_answers(con, ours["body_sha256"])
    if answers.is_empty():
        return _NO_HITS
    on_disk = {b for b in answers["batch_id"].unique().to_list() if (results_dir / f"{b}.parquet").is_file()}
    answers = answers.filter(pl.col("batch_id").is_in(list(on_disk)))
    return ours.join(answers, on="body_sha256", how="inner")


def _without(planned: PlannedFiles, drop: set[str], requests_dir: Path, settings: SubmissionSettings,
             stem: str) -> PlannedFiles:
    """The plan's files written again without the requests in `drop` (content-addressed: new names)."""
    def kept() -> Iterator[PreparedRequest]:
        for f in planned.files:
            wanted = {cid: (item_id, tokens) for cid, item_id, tokens in zip(
                f.custom_ids, f.item_ids, f.request_tokens, strict=True) if cid not in drop}
            if wanted:
                yield from reread_requests(f.path, f.url, f.model, wanted)

    again = plan_request_files(kept(), requests_dir, limits=settings.limits, file_stem=stem)
    return PlannedFiles(again.files, planned.skipped)


def _saved(hits: pl.DataFrame, model: str) -> Cost | None:
    if hits.is_empty():
        return None
    total = Cost.zero()
    for requested, prompt, completion, cached in hits.select(
            "requested_model", "prompt_tokens", "completion_tokens", "cached_tokens").iter_rows():
        cost = actual_cost(requested or model, int(prompt or 0), int(completion or 0), cached_tokens=int(cached or 0))
        if cost is None:
            return None
        total += cost
    return total


def _check_items(submitted: pl.Series, skipped: list[SkippedRequest], items: pl.DataFrame) -> None:
    """Every item became exactly one request (a builder that drops or invents items would lose them)."""
    built = submitted.append(pl.Series([s.item_id for s in skipped], dtype=pl.String)).rename("item_id")
    expected = items["item_id"]
    if built.len() != expected.len() or not built.sort().equals(expected.sort(), check_names=False):
        missing = expected.filter(~expected.is_in(built)).head(3).to_list()
        extra = built.filter(~built.is_in(expected)).head(3).to_list()
        raise ValueError(
            f"the pipeline's request builder made {built.len()} requests for {expected.len()} items (missing "
            f"{missing}, unknown {extra}): build exactly one request per item, passing each item's item_id")


def ledger_file(f: RequestFile) -> NewFile:
    """How the ledger records a written request file."""
    return NewFile(sha256=f.sha256, path=str(f.path), url=f.url, model=f.model, n_requests=f.n_requests,
                   input_tokens=f.input_tokens, max_output_tokens=f.max_output_tokens)


def plan_rows(attempt: int, submitted: pl.DataFrame,
              skipped: Sequence[tuple[str, str, str, int, str]] = ()) -> pl.DataFrame:
    """The batch_requests rows of a plan: submitted items with their file, then the ones needing no new answer
    (item_id, custom_id, body hash, input tokens, source)."""
    rows = submitted.with_columns(pl.lit(SUBMITTED).alias("source"))
    if skipped:  # else the submitted rows as they are (no copy of their columns)
        others = pl.DataFrame(skipped, schema={"item_id": pl.String, "custom_id": pl.String, "body_sha256": pl.String,
                                               "input_tokens": pl.Int64, "source": pl.String}, orient="row")
        rows = pl.concat([rows, others.with_columns(pl.lit(None, pl.String).alias("file_sha256"))], how="diagonal")
    return rows.select(pl.lit(attempt, pl.Int32).alias("attempt"), "item_id", "custom_id", "body_sha256",
                       "file_sha256", "input_tokens", "source")

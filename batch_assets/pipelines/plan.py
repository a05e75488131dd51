"""Planning a month: which items need an answer, written to content-addressed request files. No Dagster.

A plan is one submission attempt of a pipeline-month. The first plan submits every item; a later one (a user
materializing the month again) only the items whose current body has no successful answer yet, and with new
settings that is every item again, since their bodies changed. While a plan is in flight no new plan is made:
its items would be paid twice. Retries are planned by :mod:`batch_assets.pipelines.collect`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import orjson
import polars as pl

from batch_assets.batching.pricing import Cost, UnknownModelPrice, estimate_cost
from batch_assets.batching.request_files import RequestFile, SkippedRequest, plan_request_files
from batch_assets.ledger.store import Ledger, NewFile, PlanKind, PlanState, StoredPlan
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings
from batch_assets.warehouse.items import REUSED, SUBMITTED, succeeded_bodies, write_plan_items

IN_FLIGHT_STATES = (PlanState.SUBMITTING, PlanState.SUBMITTED)


@dataclass(frozen=True)
class PlanOutcome:
    """What planning did; `plan` is None when a plan in flight (`blocking`) kept it from planning."""

    plan: StoredPlan | None
    blocking: StoredPlan | None
    n_items: int
    n_reused: int  # items whose current body already has a successful answer
    files: tuple[RequestFile, ...]
    estimate: Cost | None  # None when the model has no price in the table
    message: str

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
               ledger: Ledger, con: duckdb.DuckDBPyConnection, requests_dir: Path,
               run_id: str | None = None) -> PlanOutcome:
    """Plans the month's next submission with `settings` (holding the month's lease while it does)."""
    items = item_frame(spec, items)
    key = month_key(month)
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
            spec.build_requests(items, settings.pipeline), requests_dir, limits=settings.limits,
            file_stem=f"{spec.name}-{month:%Y-%m}",
            keep=lambda request, body_sha: (request.item_id, body_sha) not in done)
        _check_items(planned.files, planned.skipped, items)
        attempt = ledger.next_attempt(spec.name, key)
        kind = PlanKind.INITIAL if attempt == 1 else PlanKind.RERUN
        estimate = _estimate(settings, planned.files)
        plan = ledger.add_plan(
            pipeline=spec.name, month=key, attempt=attempt, kind=kind, endpoint=spec.endpoint,
            settings=settings.to_json(), n_items=items.height, files=[_new_file(f) for f in planned.files],
            estimate=orjson.dumps(dataclasses.asdict(estimate)).decode() if estimate else None, run_id=run_id)
        rows = _plan_rows(attempt, planned.files, [(s.item_id, s.custom_id, s.body_sha256, s.input_tokens)
                                                   for s in planned.skipped])
        try:
            write_plan_items(con, spec.name, month, plan.plan_id, rows)
        except BaseException:
            ledger.set_plan_state(plan.plan_id, PlanState.SUPERSEDED)
            raise
        if not planned.files:  # every item already answered: nothing to submit, nothing to wait for
            ledger.set_plan_state(plan.plan_id, PlanState.COLLECTED)
        message = (f"attempt {attempt}: {sum(f.n_requests for f in planned.files)} of {items.height} items to "
                   f"submit in {len(planned.files)} file(s); {len(planned.skipped)} already answered")
        return PlanOutcome(plan, None, items.height, len(planned.skipped), tuple(planned.files), estimate, message)


def _check_items(files: list[RequestFile], skipped: list[SkippedRequest], items: pl.DataFrame) -> None:
    """Every item became exactly one request (a builder that drops or invents items would lose them)."""
    built = pl.Series("item_id", [i for f in files for i in f.item_ids] + [s.item_id for s in skipped],
                      dtype=pl.String)
    expected = items["item_id"]
    if built.len() != expected.len() or not built.sort().equals(expected.sort(), check_names=False):
        missing = expected.filter(~expected.is_in(built)).head(3).to_list()
        extra = built.filter(~built.is_in(expected)).head(3).to_list()
        raise ValueError(
            f"the pipeline's request builder made {built.len()} requests for {expected.len()} items (missing "
            f"{missing}, unknown {extra}): build exactly one request per item, passing each item's item_id")


def _new_file(f: RequestFile) -> NewFile:
    return NewFile(sha256=f.sha256, path=str(f.path), url=f.url, model=f.model, n_requests=f.n_requests,
                   input_tokens=f.input_tokens, max_output_tokens=f.max_output_tokens)


def _plan_rows(attempt: int, files: list[RequestFile],
               skipped: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    """The batch_requests rows of a plan: submitted items with their file, then the ones already answered."""
    item_ids, custom_ids, bodies, file_shas, sources = [], [], [], [], []
    for f in files:
        item_ids += f.item_ids
        custom_ids += f.custom_ids
        bodies += f.body_sha256s
        file_shas += [f.sha256] * f.n_requests
    sources = [SUBMITTED] * len(item_ids) + [REUSED] * len(skipped)
    tokens = [n for f in files for n in f.request_tokens]
    for item_id, custom_id, body, input_tokens in skipped:
        item_ids.append(item_id)
        custom_ids.append(custom_id)
        bodies.append(body)
        file_shas.append(None)
        tokens.append(input_tokens)
    return pl.DataFrame({
        "attempt": pl.Series([attempt] * len(item_ids), dtype=pl.Int32), "item_id": item_ids,
        "custom_id": custom_ids, "body_sha256": bodies, "file_sha256": file_shas,
        "input_tokens": pl.Series(tokens, dtype=pl.Int64), "source": sources,
    }, schema_overrides={"file_sha256": pl.String})


def _estimate(settings: SubmissionSettings, files: list[RequestFile]) -> Cost | None:
    requests = sum(f.n_requests for f in files)
    try:
        return estimate_cost(settings.pipeline.model, sum(f.input_tokens for f in files),
                             settings.pipeline.expected_output_tokens * requests)
    except UnknownModelPrice:
        return None

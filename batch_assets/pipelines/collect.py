"""Collecting a month: every ended batch's results into the warehouse, then the month's accounting and its
next attempt. No Dagster.

What was submitted comes from the ledger (request files by hash, items by plan, settings as submitted), never
from today's files or the declaration's defaults. How ended batches land in the warehouse: `collect_batches`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import orjson
import polars as pl
from openai.types import Batch

from batch_assets import warehouse
from batch_assets.batching.client import BatchClient
from batch_assets.batching.pricing import Cost
from batch_assets.batching.protocol import BATCH_CANCELLED_CODE, TERMINAL_BATCH_STATUSES, Outcome
from batch_assets.batching.request_files import PreparedRequest, plan_request_files, reread_requests
from batch_assets.batching.results import RESULT_SCHEMA
from batch_assets.ledger.records import FileState, MonthState, PlanKind, PlanState, StoredFile, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines import accounting
from batch_assets.pipelines.collect_batches import BatchCollected, CollectError, collect_batches
from batch_assets.pipelines.plan import ledger_file, month_key, plan_rows, submitted_rows
from batch_assets.pipelines.spec import SubmissionSettings
from batch_assets.warehouse.items import (
    BATCH_SOURCE,
    SUBMITTED,
    final_successes,
    item_status,
    mark_final,
    plan_items,
    write_plan_items,
)


@dataclass(frozen=True)
class CollectOutcome:
    collected: tuple[BatchCollected, ...]
    pending: tuple[str, ...]  # batch ids still running at the provider
    report: accounting.MonthReport | None  # None when nothing was ever planned for the month
    settings: SubmissionSettings | None  # what the month's current items were built with
    retry_plan: StoredPlan | None = None
    message: str = ""
    classified: pl.DataFrame = field(default_factory=pl.DataFrame, repr=False)

    @property
    def waiting(self) -> bool:
        """Batches still run and nothing new came back: the outputs have nothing new to show."""
        return bool(self.pending) and not self.collected

    def total(self, which: str) -> Cost | None:
        costs = [getattr(b, which) for b in self.collected]
        if any(c is None for c in costs):
            return None
        return sum(costs, Cost.zero())


def collect_month(client: BatchClient, ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str,
                  month: date, *, work_dir: Path, results_dir: Path, requests_dir: Path,
                  source_item_ids: pl.Series | None = None) -> CollectOutcome:
    """Collects every ended batch of the month, accounts for each item and plans the next attempt."""
    key = month_key(month)
    record = ledger.month(pipeline, key)
    if record is None or record.root_plan_id is None:
        return CollectOutcome((), (), None, None, message=f"nothing was ever submitted for {pipeline} {month:%Y-%m}")
    open_plans = ledger.plans(pipeline, key, states=(PlanState.SUBMITTING, PlanState.SUBMITTED))
    collected: list[BatchCollected] = []
    pending: list[str] = []
    for plan in open_plans:
        ended: list[tuple[StoredFile, Batch]] = []
        for stored in ledger.files(plan_id=plan.plan_id, states=(FileState.SUBMITTED, FileState.ENDED)):
            batch = client.retrieve(stored.batch_id or "")
            if batch.status not in TERMINAL_BATCH_STATUSES:
                pending.append(batch.id)
                continue
            ended.append((stored, batch))
        if ended:
            collected.extend(collect_batches(client, ledger, con, plan, ended, work_dir, results_dir))
        if record.cancel_requested:
            _cancel_unsubmitted(ledger, con, plan)
        if not ledger.files(plan_id=plan.plan_id, states=tuple(s for s in FileState if s not in (
                FileState.COLLECTED, FileState.CANCELLED))):
            ledger.set_plan_state(plan.plan_id, PlanState.COLLECTED)
    root = ledger.plan(record.root_plan_id)
    assert root is not None
    settings = SubmissionSettings.from_json(root.settings)
    if pending and not collected:
        return CollectOutcome((), tuple(pending), None, settings,
                              message=f"{len(pending)} batch(es) of {pipeline} {month:%Y-%m} still running: the "
                                      "batch sensor collects them when they end")
    return _account(ledger, con, pipeline, month, record.cancel_requested, settings, root, tuple(collected),
                    tuple(pending), requests_dir=requests_dir, source_item_ids=source_item_ids)


def month_report(ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str, month: date, *,
                 source_item_ids: pl.Series | None = None) -> CollectOutcome:
    """The month's accounting as it stands, without collecting anything."""
    key = month_key(month)
    record = ledger.month(pipeline, key)
    if record is None or record.root_plan_id is None:
        return CollectOutcome((), (), None, None, message=f"nothing was ever submitted for {pipeline} {month:%Y-%m}")
    root = ledger.plan(record.root_plan_id)
    assert root is not None
    settings = SubmissionSettings.from_json(root.settings)
    classified = _classified(ledger, con, pipeline, month, record.root_plan_id, settings, record.cancel_requested)
    report = accounting.report(classified, state=record.state, attempt=record.attempt, policy=settings.retry,
                               source_item_ids=source_item_ids)
    return CollectOutcome((), (), report, settings, classified=classified)


def month_answers(ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str, month: date) -> CollectOutcome:
    """What the output table is built from: the month's report and its succeeded items (`classified` holds
    only those). Read from what the last collect left (its report in the ledger, the final outcomes it marked)
    when that was for the month's current plan, which spares a month of a million items its second accounting;
    else worked out anew, as `month_report` does."""
    record = ledger.month(pipeline, month_key(month))
    stored = orjson.loads(record.summary) if record is not None and record.summary else {}
    if record is None or record.root_plan_id is None or stored.get("root_plan_id") != record.root_plan_id \
            or "report" not in stored:
        return month_report(ledger, con, pipeline, month)
    root = ledger.plan(record.root_plan_id)
    assert root is not None
    report = dataclasses.replace(accounting.MonthReport.from_record(stored["report"]), state=record.state)
    successes = final_successes(con, pipeline, month).with_columns(
        pl.lit(accounting.ItemState.SUCCEEDED.value).alias("item_state"))
    return CollectOutcome((), (), report, SubmissionSettings.from_json(root.settings), classified=successes)


def _cancel_unsubmitted(ledger: Ledger, con: duckdb.DuckDBPyConnection, plan: StoredPlan) -> None:
    """Items of files cancelled before they were submitted get their `cancelled` outcome (they count)."""
    month = date.fromisoformat(plan.month)
    for stored in ledger.files(plan_id=plan.plan_id, states=(FileState.CANCELLED,)):
        if stored.collected_at is not None:
            continue
        items = plan_items(con, plan.pipeline, month, [plan.plan_id], file_sha256s=[stored.sha256])
        rows = items.select(
            "custom_id", "item_id", "attempt", pl.lit(None, pl.String).alias("batch_id"),
            pl.lit(Outcome.CANCELLED.value).alias("outcome"), pl.lit(None, pl.Int32).alias("status_code"),
            pl.lit(BATCH_CANCELLED_CODE).alias("error_code"),
            pl.lit("cancelled by the user before it was submitted").alias("error_message"),
            pl.lit(None, pl.String).alias("response_model"), pl.lit(None, pl.Int64).alias("prompt_tokens"),
            pl.lit(None, pl.Int64).alias("completion_tokens"), pl.lit(None, pl.Int64).alias("cached_tokens"),
            pl.lit(None, pl.Int64).alias("reasoning_tokens"), "plan_id", "body_sha256",
            pl.lit(False).alias("final"), pl.lit(stored.model).alias("requested_model"),
            pl.lit(BATCH_SOURCE).alias("source"))
        warehouse.replace_partition(con, "batch_outcomes", month, rows, pipeline=plan.pipeline,
                                    within={"plan_id": [plan.plan_id], "custom_id": rows["custom_id"].to_list()})
        ledger.update_file(plan.plan_id, stored.sha256, collected_at=time.time())


# -- the month ---------------------------------------------------------------------------------------------------
def _classified(ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str, month: date, root_plan_id: int,
                settings: SubmissionSettings, cancelled_by_user: bool) -> pl.DataFrame:
    superseded = [p.plan_id for p in ledger.plans(pipeline, month_key(month), states=(PlanState.SUPERSEDED,))]
    status = item_status(con, pipeline, month, root_plan_id, superseded)
    return accounting.classify(status, settings.retry, cancelled_by_user=cancelled_by_user)


def _account(ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str, month: date, cancelled_by_user: bool,
             settings: SubmissionSettings, root: StoredPlan, collected: tuple[BatchCollected, ...],
             pending: tuple[str, ...], *, requests_dir: Path, source_item_ids: pl.Series | None) -> CollectOutcome:
    key = month_key(month)
    classified = _classified(ledger, con, pipeline, month, root.plan_id, settings, cancelled_by_user)
    final = classified.lazy().filter(pl.col("item_state").is_in([s.value for s in accounting.FINAL_ITEM_STATES])
                                     & pl.col("outcome_plan_id").is_not_null()).select(
        "custom_id", "outcome_plan_id").collect()
    mark_final(con, pipeline, month, final)
    still_open = ledger.plans(pipeline, key, states=(PlanState.PLANNED, PlanState.SUBMITTING, PlanState.SUBMITTED))
    retry_plan = None
    to_retry = classified.filter(pl.col("item_state") == accounting.ItemState.RETRY.value)
    if to_retry.height and not still_open and not cancelled_by_user:
        retry_plan = plan_retry(ledger, con, pipeline, month, root, settings, to_retry, requests_dir=requests_dir)
    record = ledger.month(pipeline, key)
    assert record is not None
    state = accounting.month_state(classified, cancelled_by_user=cancelled_by_user,
                                   retry_planned=retry_plan is not None or any(
                                       p.kind == PlanKind.RETRY for p in still_open),
                                   current=record.state)
    attempt = retry_plan.attempt if retry_plan else record.attempt
    report = accounting.report(classified, state=state, attempt=attempt, policy=settings.retry,
                               source_item_ids=source_item_ids)
    # The report and the plan it is for: the output step reads them back instead of accounting again.
    ledger.update_month(pipeline, key, state=state, summary=orjson.dumps({
        "by_state": report.by_state, "by_outcome": report.by_outcome, "n_items": report.n_items,
        "root_plan_id": root.plan_id, "report": report.as_record()}).decode())
    message = report.summary()
    if retry_plan is not None:
        message += (f"; {retry_plan.n_requests} item(s) will be resubmitted as attempt {retry_plan.attempt} by the "
                    "batch sensor")
    return CollectOutcome(collected, pending, report, settings, retry_plan, message, classified)


def plan_retry(ledger: Ledger, con: duckdb.DuckDBPyConnection, pipeline: str, month: date, root: StoredPlan,
               settings: SubmissionSettings, to_retry: pl.DataFrame, *, requests_dir: Path,
               now: float | None = None) -> StoredPlan:
    """The next attempt for `to_retry` items: their request lines exactly as last submitted, in new files."""
    key = month_key(month)
    last = plan_items(con, pipeline, month, sorted(set(to_retry["last_plan_id"].drop_nulls().to_list())))
    last = last.filter(pl.col("source") == SUBMITTED).join(
        to_retry.select("item_id", "last_plan_id"), left_on=["item_id", "plan_id"],
        right_on=["item_id", "last_plan_id"], how="semi")
    with ledger.month_lease(pipeline, key):
        attempt = ledger.next_attempt(pipeline, key)
        planned = plan_request_files(_lines_as_submitted(ledger, last), requests_dir,
                                     limits=settings.limits, file_stem=f"{pipeline}-{month:%Y-%m}")
        plan = ledger.add_plan(
            pipeline=pipeline, month=key, attempt=attempt, kind=PlanKind.RETRY, endpoint=root.endpoint,
            settings=root.settings, n_items=last.height, root_plan_id=root.plan_id,
            files=[ledger_file(f) for f in planned.files],
            not_before=(now or time.time()) + settings.retry.retry_delay_seconds)
        rows = plan_rows(attempt, submitted_rows(planned.files))
        try:
            write_plan_items(con, pipeline, month, plan.plan_id, rows)
        except BaseException:
            ledger.set_plan_state(plan.plan_id, PlanState.SUPERSEDED)
            raise
    return plan


def _lines_as_submitted(ledger: Ledger, last: pl.DataFrame) -> Iterator[PreparedRequest]:
    """The request lines of `last` (plan_id, file_sha256, custom_id, item_id, input_tokens) read back from the
    request files they went out in; their bodies hash the same, so their answers count for the same items."""
    for plan_id, file_sha in last.select("plan_id", "file_sha256").unique().sort("plan_id", "file_sha256"
                                                                                   ).iter_rows():
        stored = ledger.file(plan_id, file_sha)
        if stored is None:
            raise ValueError(f"request file {file_sha} of plan {plan_id} is not in the ledger")
        rows = last.filter((pl.col("plan_id") == plan_id) & (pl.col("file_sha256") == file_sha))
        wanted = {cid: (item_id, tokens) for cid, item_id, tokens in rows.select(
            "custom_id", "item_id", "input_tokens").iter_rows()}
        yield from reread_requests(Path(stored.path), stored.url, stored.model, wanted)


__all__ = ["BatchCollected", "CollectError", "CollectOutcome", "MonthState", "RESULT_SCHEMA", "collect_month",
           "month_answers", "month_report", "plan_retry"]

"""The batch sensor's decisions, without Dagster: poll what is in flight, record progress in the ledger, and say
which month needs its results collected and which retry is due.

It reads and writes only the ledger and the Batch API, never the DuckDB warehouse (a run may hold its write
lock).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from openai.types import Batch

from batch_assets.batching.client import BatchClient
from batch_assets.batching.protocol import TERMINAL_BATCH_STATUSES, BatchStatus
from batch_assets.ledger.records import FileState, MonthState, PlanKind, PlanState, StoredFile, StoredMonth, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.queue import TOKEN_LIMIT_EXCEEDED, enqueued_tokens, fits, limit_key

LIST_PAGE_SIZE = 100  # the Batch API's largest page
DEFAULT_STALL_AFTER_SECONDS = 6 * 3600.0
# A file refused for the enqueued-token limit this often is probably over the limit on its own: it then ends like
# any failed batch (its items are retried as a new attempt, within max_attempts, and say why).
MAX_TOKEN_LIMIT_REQUEUES = 5
_RUNNING = (FileState.SUBMITTED,)


@dataclass(frozen=True)
class MonthProgress:
    pipeline: str
    month: str
    state: MonthState
    attempt: int
    completed: int
    failed: int
    total: int
    batch_statuses: dict[str, str]
    queued_files: int
    items_by_state: dict[str, int] = field(default_factory=dict)  # as the last collect counted them

    @property
    def signature(self) -> list[object]:
        return [self.state.value, self.attempt, self.completed, self.failed, self.total]

    def describe(self) -> str:
        state = self.state.value.replace("_", " ")
        if self.state in (MonthState.WAITING, MonthState.RETRYING):
            queued = f", {self.queued_files} file(s) queued for room" if self.queued_files else ""
            return (f"{state} (attempt {self.attempt}): {self.completed + self.failed} of {self.total} requests "
                    f"ended{queued}")
        items = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in self.items_by_state.items())
        return f"{state} (attempt {self.attempt})" + (f": {items}" if items else "")


@dataclass(frozen=True)
class CollectDue:
    pipeline: str
    month: str
    plan_id: int
    n_ended: int

    @property
    def run_key(self) -> str:
        return f"collect:{self.pipeline}:{self.month}:{self.plan_id}:{self.n_ended}"


@dataclass(frozen=True)
class SubmitDue:
    pipeline: str
    month: str
    plan_id: int
    reason: str  # "retry", "recover" (a submit run that died half way) or "queued-..." (room freed)

    @property
    def run_key(self) -> str:
        return f"submit:{self.pipeline}:{self.month}:{self.plan_id}:{self.reason}"


@dataclass(frozen=True)
class Stall:
    file: StoredFile
    idle_seconds: float

    def describe(self) -> str:
        f = self.file
        return (f"batch {f.batch_id} of {f.pipeline} {f.month[:7]} (attempt {f.attempt}) has made no progress for "
                f"{self.idle_seconds / 3600:.1f} h ({f.completed + f.failed} of {f.total} ended, status "
                f"{f.batch_status}); to give up on it: batch-assets batches cancel --pipeline {f.pipeline} "
                f"--month {f.month[:7]}")


@dataclass
class TickDecisions:
    progress: list[MonthProgress] = field(default_factory=list)  # every month with open work or a change
    collect: list[CollectDue] = field(default_factory=list)
    submit: list[SubmitDue] = field(default_factory=list)
    stalls: list[Stall] = field(default_factory=list)
    api_calls: int = 0


def poll(client: BatchClient, newest_first: Sequence[str]) -> tuple[dict[str, Batch], int]:
    """Current state of the given batches (newest first, by when they were submitted) and the API calls it took.

    The Batch API lists every batch of the account newest first, with an ``after=<batch id>`` cursor. Pages are
    read from the top while they hold tracked batches; a page with none of them (other teams' batches, or ours
    buried under newer ones) is not read through: the newest batch still missing is retrieved and listing goes on
    right after it. So the calls are bounded by the pages that hold tracked batches, plus two per gap, whatever
    their age among the account's other batches. Batches never listed (out of order, or gone) are retrieved.
    """
    wanted = list(dict.fromkeys(newest_first))
    wanted_ids = set(wanted)
    found: dict[str, Batch] = {}
    calls = 0
    after: str | None = None
    while len(found) < len(wanted):
        page = client.list_page(limit=LIST_PAGE_SIZE, after=after, only=wanted_ids)
        calls += 1
        hits = 0
        for batch in page.batches:
            if batch.id not in found:
                found[batch.id] = batch
                hits += 1
        if len(found) == len(wanted) or not page.ids or page.has_more is False:
            break
        if hits:
            after = page.ids[-1]
            continue
        jump = next(batch_id for batch_id in wanted if batch_id not in found)
        found[jump] = client.retrieve(jump)
        calls += 1
        after = jump
    for batch_id in wanted:
        if batch_id not in found:
            found[batch_id] = client.retrieve(batch_id)
            calls += 1
    return found, calls


def advance(client: BatchClient, ledger: Ledger, *, now: float | None = None,
            stall_after_seconds: float = DEFAULT_STALL_AFTER_SECONDS,
            changed_since: float | None = None,
            enqueued_token_limits: Mapping[str, int] | None = None) -> TickDecisions:
    """One sensor tick: poll running batches, record their progress, decide collects and due submissions
    (retries whose delay passed, queued files whose model has room again)."""
    now = time.time() if now is None else now
    limits = enqueued_token_limits or {}
    decisions = TickDecisions()
    running = ledger.files(states=_RUNNING)
    newest_first = sorted(running, key=lambda f: f.submitted_at or f.created_at, reverse=True)
    batches, decisions.api_calls = poll(client, [f.batch_id for f in newest_first if f.batch_id])
    updates = []
    for stored in running:
        batch = batches.get(stored.batch_id or "")
        if batch is None:
            continue
        counts = batch.request_counts
        completed, failed = (counts.completed, counts.failed) if counts else (0, 0)
        total = counts.total if counts and counts.total else stored.total
        values: dict[str, object] = {"batch_status": batch.status}
        if (completed, failed, total) != (stored.completed, stored.failed, stored.total):
            values.update(completed=completed, failed=failed, total=total, progress_at=now)
        if _over_token_limit(batch) and stored.tries < MAX_TOKEN_LIMIT_REQUEUES:
            # Refused for the organisation's enqueued-token limit: nothing ran. Queue the same file again (a new
            # idempotency key: it is a deliberate second create), never drop it.
            values.update(state=FileState.QUEUED, tries=stored.tries + 1, batch_id=None, batch_status=None,
                          error_code=TOKEN_LIMIT_EXCEEDED, error_message=_first_error(batch))
        elif batch.status in TERMINAL_BATCH_STATUSES:
            values.update(state=FileState.ENDED, ended_at=now)
        elif now - (stored.progress_at or stored.submitted_at or now) > stall_after_seconds and \
                "progress_at" not in values:
            decisions.stalls.append(Stall(stored, now - (stored.progress_at or stored.submitted_at or now)))
        updates.append((stored.plan_id, stored.sha256, values))
    ledger.update_files(updates)

    open_plans = ledger.open_plans()
    open_months = {(p.pipeline, p.month) for p in open_plans}
    months: dict[tuple[str, str], StoredMonth] = {}
    for record in ledger.months():
        if (record.pipeline, record.month) in open_months or (
                changed_since is not None and record.updated_at >= changed_since):
            months[(record.pipeline, record.month)] = record
    files_by_plan = _by_plan(ledger.files(plan_ids=[p.plan_id for p in open_plans]))
    for plan in open_plans:
        files = files_by_plan.get(plan.plan_id, [])
        states = {f.state for f in files}
        # Collect once nothing runs at the provider; files still queued for room are collected in later waves.
        if plan.state == PlanState.SUBMITTED and not states & {FileState.SUBMITTED, FileState.SUBMITTING,
                                                               FileState.PLANNED}:
            uncollected = [f for f in files if f.state == FileState.ENDED or (
                f.state == FileState.CANCELLED and f.collected_at is None)]
            if uncollected:
                decisions.collect.append(CollectDue(plan.pipeline, plan.month, plan.plan_id, len(uncollected)))
        elif plan.state == PlanState.PLANNED and plan.kind == PlanKind.RETRY and (plan.not_before or 0) <= now:
            decisions.submit.append(SubmitDue(plan.pipeline, plan.month, plan.plan_id, "retry"))
        elif plan.state == PlanState.SUBMITTING:
            leased = months.get((plan.pipeline, plan.month))
            if leased is not None and (leased.lease_owner is None or (leased.lease_expires_at or 0) < now):
                decisions.submit.append(SubmitDue(plan.pipeline, plan.month, plan.plan_id, "recover"))
    for record in ledger.months(states=(MonthState.PLANNED,)):
        # A plan that needed no batch (every item already answered, or an empty month) still needs its month
        # accounted for and its outputs rebuilt.
        root = ledger.plan(record.root_plan_id) if record.root_plan_id is not None else None
        if root is not None and root.state == PlanState.COLLECTED and root.n_requests == 0:
            decisions.collect.append(CollectDue(record.pipeline, record.month, root.plan_id, 0))
            months[(record.pipeline, record.month)] = record
    decisions.submit += _queued_due(ledger, open_plans, limits)
    decisions.progress = _progress(ledger, list(months.values()), open_plans, files_by_plan)
    return decisions


def _by_plan(files: Iterable[StoredFile]) -> dict[int, list[StoredFile]]:
    grouped: dict[int, list[StoredFile]] = {}
    for stored in files:
        grouped.setdefault(stored.plan_id, []).append(stored)
    return grouped


def _over_token_limit(batch: Batch) -> bool:
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    return batch.status == BatchStatus.FAILED.value and any(e.code == TOKEN_LIMIT_EXCEEDED for e in errors)


def _first_error(batch: Batch) -> str | None:
    errors = batch.errors.data if batch.errors and batch.errors.data else []
    return errors[0].message if errors else None


def _queued_due(ledger: Ledger, open_plans: list[StoredPlan], limits: Mapping[str, int]) -> list[SubmitDue]:
    """Plans with queued files that fit now, oldest first, counting the room each one takes.

    A file with a configured limit fits when its model has room. One queued again after the provider refused it
    (``token_limit_exceeded`` with no limit configured here) waits until nothing of its model runs any more.
    """
    queued = ledger.files(states=(FileState.QUEUED,))
    if not queued:
        return []
    enqueued = dict(enqueued_tokens(ledger, limits))
    running = {f.model for f in ledger.files(states=(FileState.SUBMITTING, FileState.SUBMITTED))}
    freed: dict[str, int] = {}  # per model, how many of its batches ended so far: a new run key each time room frees
    for f in ledger.files(states=(FileState.ENDED, FileState.COLLECTED)):
        freed[f.model] = freed.get(f.model, 0) + 1
    plans = {p.plan_id: p for p in open_plans}
    due: dict[int, SubmitDue] = {}
    for stored in sorted(queued, key=lambda f: (f.created_at, f.plan_id, f.path)):
        plan = plans.get(stored.plan_id)
        if plan is None or plan.state != PlanState.SUBMITTED:
            continue
        key = limit_key(stored.model, limits)
        if key is None:
            if stored.model in running:
                continue
            running.add(stored.model)
        elif not fits(stored, limits, enqueued):
            continue
        else:
            enqueued[key] = enqueued.get(key, 0) + stored.input_tokens
        tries = sum(f.tries for f in queued if f.plan_id == plan.plan_id)
        due.setdefault(plan.plan_id, SubmitDue(plan.pipeline, plan.month, plan.plan_id,
                                               f"queued-{freed.get(stored.model, 0)}-{tries}"))
    return list(due.values())


def _progress(ledger: Ledger, records: list[StoredMonth], open_plans: list[StoredPlan],
              open_files: Mapping[int, list[StoredFile]]) -> list[MonthProgress]:
    """Each month's progress over its current plans: the open ones while it runs, every attempt of its current
    items once it is finished (so a done month shows what its batches did). The ledger is read in a few queries
    whatever the number of months: a fresh sensor cursor looks at every month at once."""
    open_by_month: dict[tuple[str, str], list[StoredPlan]] = {}
    for plan in open_plans:
        open_by_month.setdefault((plan.pipeline, plan.month), []).append(plan)
    finished_roots = [r.root_plan_id for r in records
                      if (r.pipeline, r.month) not in open_by_month and r.root_plan_id is not None]
    by_root: dict[int, list[StoredPlan]] = {}
    for plan in ledger.plans_with_roots(finished_roots):
        if plan.state != PlanState.SUPERSEDED and plan.root_plan_id is not None:
            by_root.setdefault(plan.root_plan_id, []).append(plan)
    files_by_plan = dict(open_files)
    files_by_plan.update(_by_plan(ledger.files(plan_ids=[p.plan_id for plans in by_root.values() for p in plans])))
    progress = []
    for record in records:
        plans = open_by_month.get((record.pipeline, record.month)) or by_root.get(record.root_plan_id or -1, [])
        files = [f for p in plans for f in files_by_plan.get(p.plan_id, [])]
        by_state = orjson.loads(record.summary).get("by_state", {}) if record.summary else {}
        progress.append(MonthProgress(
            record.pipeline, record.month, record.state, record.attempt,
            completed=sum(f.completed for f in files), failed=sum(f.failed for f in files),
            total=sum(f.total for f in files), batch_statuses={f.batch_id: f.batch_status or "" for f in files
                                                               if f.batch_id},
            queued_files=sum(f.state == FileState.QUEUED for f in files),
            items_by_state={k: v for k, v in by_state.items() if v}))
    return progress


__all__ = ["CollectDue", "MonthProgress", "Stall", "SubmitDue", "TickDecisions", "advance", "poll"]

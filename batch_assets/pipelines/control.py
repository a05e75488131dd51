"""What a user does to a month's batches by hand: see where they stand, cancel them. No Dagster.

Cancelling marks the month as cancelled by the user in the ledger (so nothing of it is retried), asks the
provider to cancel every running batch (finished items stay and are collected) and drops files not submitted
yet. The batch sensor then collects what the cancelled batches had finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import openai
import orjson

from batch_assets.batching.client import BatchClient
from batch_assets.batching.protocol import TERMINAL_BATCH_STATUSES
from batch_assets.ledger.records import FileState, PlanState, StoredFile, StoredMonth, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.plan import month_key


@dataclass(frozen=True)
class CancelOutcome:
    pipeline: str
    month: str
    cancelled_batches: tuple[str, ...]  # the provider was asked to cancel these
    dropped_files: int  # files never submitted, now never will be

    def describe(self) -> str:
        if not (self.cancelled_batches or self.dropped_files):
            return (f"{self.pipeline} {self.month[:7]}: nothing to cancel (no batch running, nothing waiting); "
                    "nothing of it will be retried")
        return (f"{self.pipeline} {self.month[:7]}: cancelling {len(self.cancelled_batches)} batch(es) "
                f"{', '.join(self.cancelled_batches)}; {self.dropped_files} file(s) not submitted dropped. Finished "
                "items are kept and collected by the batch sensor; nothing of this month is retried")


@dataclass(frozen=True)
class MonthLine:
    """One pipeline-month for `batch-assets batches status`."""

    month: StoredMonth
    files: tuple[StoredFile, ...]  # of its open plans, or of every attempt of its current items once it is finished

    @property
    def items_by_state(self) -> dict[str, int]:
        """Items by state as the month's last collect counted them (empty before the first collect)."""
        by_state = orjson.loads(self.month.summary).get("by_state", {}) if self.month.summary else {}
        return {name: n for name, n in by_state.items() if n}

    @property
    def completed(self) -> int:
        return sum(f.completed for f in self.files)

    @property
    def failed(self) -> int:
        return sum(f.failed for f in self.files)

    @property
    def total(self) -> int:
        return sum(f.total for f in self.files)


def cancel_month(client: BatchClient, ledger: Ledger, pipeline: str, month: date) -> CancelOutcome:
    key = month_key(month)
    record = ledger.month(pipeline, key)
    if record is None:
        raise ValueError(f"nothing was ever submitted for {pipeline} {month:%Y-%m}: nothing to cancel "
                         "(see batch-assets batches status)")
    ledger.update_month(pipeline, key, cancel_requested=True)
    cancelled, dropped = [], 0
    with ledger.month_lease(pipeline, key):
        for plan in ledger.plans(pipeline, key, states=(PlanState.PLANNED, PlanState.SUBMITTING,
                                                          PlanState.SUBMITTED)):
            for stored in ledger.files(plan_id=plan.plan_id):
                if stored.state in (FileState.PLANNED, FileState.QUEUED):
                    ledger.update_file(plan.plan_id, stored.sha256, state=FileState.CANCELLED)
                    dropped += 1
                elif stored.state in (FileState.SUBMITTED, FileState.SUBMITTING) and stored.batch_id:
                    try:
                        batch = client.cancel(stored.batch_id)
                    except openai.ConflictError:  # it ended meanwhile: nothing to cancel
                        continue
                    if batch.status not in TERMINAL_BATCH_STATUSES:
                        cancelled.append(stored.batch_id)
            if plan.state != PlanState.SUBMITTED:
                # Nothing more of it will be submitted; the sensor collects it, which gives its dropped items
                # their `cancelled` outcome so that every item stays accounted for.
                ledger.set_plan_state(plan.plan_id, PlanState.SUBMITTED)
    return CancelOutcome(pipeline, key, tuple(cancelled), dropped)


def month_lines(ledger: Ledger, *, pipeline: str | None = None, month: date | None = None,
                live_only: bool = True) -> list[MonthLine]:
    """Pipeline-months with their open files (only those with open work, unless `live_only` is False)."""
    lines = []
    open_plans = ledger.open_plans(pipeline)
    for record in ledger.months(pipeline=pipeline):
        if month is not None and record.month != month_key(month):
            continue
        plans = current_plans(ledger, record, open_plans)
        if live_only and not any(p.state != PlanState.COLLECTED for p in plans):
            continue
        lines.append(MonthLine(record, tuple(f for p in plans for f in ledger.files(plan_id=p.plan_id))))
    return lines


def current_plans(ledger: Ledger, record: StoredMonth, open_plans: Iterable[StoredPlan]) -> list[StoredPlan]:
    """The plans a month's progress is told from: its open ones while it runs; once it is finished, every attempt
    of its current items (so a done month shows what its batches did, not nothing)."""
    plans = [p for p in open_plans if (p.pipeline, p.month) == (record.pipeline, record.month)]
    if not plans and record.root_plan_id is not None:
        plans = [p for p in ledger.plans(record.pipeline, record.month)
                 if p.root_plan_id == record.root_plan_id and p.state != PlanState.SUPERSEDED]
    return plans

"""What the ledger records: the states of months, plans and request files, and the rows it hands back.

Plain values only (enums and frozen dataclasses); :mod:`batch_assets.ledger.store` reads and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LedgerError(RuntimeError):
    """A ledger operation that cannot go ahead; the message says what to do."""


class MonthState(StrEnum):
    """Where a pipeline-month stands, as the UI and `batch-assets batches status` show it."""

    PLANNED = "planned"  # request files written, nothing submitted yet
    WAITING = "waiting"  # batches running at the provider
    RETRYING = "retrying"  # a retry attempt is planned or running
    DONE = "done"  # every item succeeded
    DONE_WITH_FAILURES = "done_with_failures"  # every item has a final outcome, some failed
    CANCELLED = "cancelled"  # cancelled by the user; finished items kept


class PlanKind(StrEnum):
    INITIAL = "initial"  # the first submission of a month (or with new settings)
    RERUN = "rerun"  # the same month submitted again by a user: only items without a success
    RETRY = "retry"  # the sensor's automatic resubmission of retryable items


class PlanState(StrEnum):
    PLANNED = "planned"  # files written, not submitted yet (a newer plan may replace it)
    SUBMITTING = "submitting"  # some files submitted
    SUBMITTED = "submitted"  # every file submitted (or queued for capacity)
    COLLECTED = "collected"  # every batch ended and its results are in the warehouse
    SUPERSEDED = "superseded"  # replaced before anything was submitted
    CANCELLED = "cancelled"


class FileState(StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"  # waits for enqueued-token capacity
    SUBMITTING = "submitting"  # a create is under way (or its response was lost): look the key up first
    SUBMITTED = "submitted"  # the batch runs at the provider
    ENDED = "ended"  # the batch reached a terminal status; results not collected yet
    COLLECTED = "collected"
    CANCELLED = "cancelled"  # never submitted, and never will be


LIVE_FILE_STATES = frozenset({FileState.PLANNED, FileState.QUEUED, FileState.SUBMITTING, FileState.SUBMITTED,
                              FileState.ENDED})
OPEN_PLAN_STATES = frozenset({PlanState.PLANNED, PlanState.SUBMITTING, PlanState.SUBMITTED})

@dataclass(frozen=True)
class StoredMonth:
    pipeline: str
    month: str
    state: MonthState
    attempt: int
    root_plan_id: int | None
    cancel_requested: bool
    summary: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    updated_at: float


@dataclass(frozen=True)
class StoredPlan:
    plan_id: int
    pipeline: str
    month: str
    attempt: int
    kind: PlanKind
    root_plan_id: int | None
    endpoint: str
    settings: str
    state: PlanState
    n_items: int
    n_requests: int
    input_tokens: int
    estimate: str | None
    not_before: float | None
    run_id: str | None
    created_at: float
    collected_at: float | None


@dataclass(frozen=True)
class StoredFile:
    plan_id: int
    sha256: str
    pipeline: str
    month: str
    attempt: int
    path: str
    url: str
    model: str
    n_requests: int
    input_tokens: int
    max_output_tokens: int | None
    state: FileState
    tries: int
    idempotency_key: str | None
    upload_file_id: str | None
    batch_id: str | None
    batch_status: str | None
    completed: int
    failed: int
    total: int
    error_code: str | None
    error_message: str | None
    created_at: float
    submitted_at: float | None
    progress_at: float | None
    ended_at: float | None
    collected_at: float | None

    @property
    def live(self) -> bool:
        return self.state in LIVE_FILE_STATES


@dataclass(frozen=True)
class NewFile:
    """A request file to record with a new plan."""

    sha256: str
    path: str
    url: str
    model: str
    n_requests: int
    input_tokens: int
    max_output_tokens: int | None = None

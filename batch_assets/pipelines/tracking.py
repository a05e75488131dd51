"""Following submitted batches until a pipeline-month is done: the sensor's logic, without Dagster.

The state is small and JSON-serialisable (the sensor keeps it in its cursor): for each tracked
pipeline-month, the batch ids of its latest submission and the progress last reported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson
from openai.types import Batch

from batch_assets.batching.client import BatchClient
from batch_assets.batching.protocol import TERMINAL_BATCH_STATUSES

# How many listed batches one poll reads (newest first) before falling back to one retrieve per batch.
MAX_LISTED_BATCHES = 1000


@dataclass
class TrackedMonth:
    pipeline: str
    month: str  # the partition key
    submission_id: int  # storage id of the batches materialization: identifies the submission
    batch_ids: list[str]
    last_progress: list[int] | None = None  # completed, failed, total as last reported
    requests: int = 0  # submitted requests: the total to show while batches still validate


@dataclass
class TrackerState:
    seen_up_to: dict[str, int] = field(default_factory=dict)  # pipeline -> last storage id read
    tracked: dict[str, TrackedMonth] = field(default_factory=dict)  # "pipeline|month" -> entry

    @classmethod
    def from_cursor(cls, cursor: str | None) -> TrackerState:
        if not cursor:
            return cls()
        raw = orjson.loads(cursor)
        return cls(raw.get("seen_up_to", {}), {k: TrackedMonth(**v) for k, v in raw.get("tracked", {}).items()})

    def to_cursor(self) -> str:
        return orjson.dumps({"seen_up_to": self.seen_up_to,
                             "tracked": {k: asdict(v) for k, v in self.tracked.items()}}).decode()

    def track(self, entry: TrackedMonth) -> None:
        """A newer submission for the same month replaces the older one."""
        key = f"{entry.pipeline}|{entry.month}"
        current = self.tracked.get(key)
        if current is None or current.submission_id < entry.submission_id:
            self.tracked[key] = entry

    def all_batch_ids(self) -> set[str]:
        return {batch_id for entry in self.tracked.values() for batch_id in entry.batch_ids}


@dataclass(frozen=True)
class MonthProgress:
    entry: TrackedMonth
    statuses: dict[str, str]
    completed: int
    failed: int
    total: int

    @property
    def finished(self) -> bool:
        return all(status in TERMINAL_BATCH_STATUSES for status in self.statuses.values())

    @property
    def counts(self) -> list[int]:
        return [self.completed, self.failed, self.total]


def poll(client: BatchClient, batch_ids: set[str]) -> dict[str, Batch]:
    """Current state of the given batches: list pages first (one call per 100), then retrieve stragglers."""
    found: dict[str, Batch] = {}
    if not batch_ids:
        return found
    for listed, batch in enumerate(client.list(limit=100)):
        if batch.id in batch_ids:
            found[batch.id] = batch
        if len(found) == len(batch_ids) or listed + 1 >= MAX_LISTED_BATCHES:
            break
    for batch_id in batch_ids - found.keys():
        found[batch_id] = client.retrieve(batch_id)
    return found


def progress(state: TrackerState, batches: dict[str, Batch]) -> list[MonthProgress]:
    """Progress of every tracked month, from polled batches."""
    report = []
    for entry in state.tracked.values():
        statuses, completed, failed, total = {}, 0, 0, 0
        for batch_id in entry.batch_ids:
            batch = batches[batch_id]
            statuses[batch_id] = batch.status
            counts = batch.request_counts
            if counts is not None:
                completed, failed, total = completed + counts.completed, failed + counts.failed, total + counts.total
        report.append(MonthProgress(entry, statuses, completed, failed, max(total, entry.requests)))
    return report

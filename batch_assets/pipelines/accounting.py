"""Where every item of a month stands, and what that makes of the month. Pure functions, no Dagster.

Each item of the month's current plan is in exactly one of these states:

- ``succeeded``: a successful answer to its current body exists (final);
- ``in_flight``: it went out in a batch whose results are not collected yet;
- ``retry``: its latest answer failed in a way worth another try (429/5xx, expired, missing, cancelled by
  someone other than the user) and it has attempts left: the next attempt resubmits it;
- ``failed``: its latest answer failed for good (400-type errors, attempts used up, cancelled by the user)
  (final);
- ``unaccounted``: none of the above — a bug or a lost record; the month's check says so (ERROR).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl

from batch_assets.batching.protocol import Outcome
from batch_assets.ledger.records import MonthState
from batch_assets.pipelines.spec import RetryPolicy


class ItemState(StrEnum):
    SUCCEEDED = "succeeded"
    IN_FLIGHT = "in_flight"
    RETRY = "retry"
    FAILED = "failed"
    UNACCOUNTED = "unaccounted"


FINAL_ITEM_STATES = frozenset({ItemState.SUCCEEDED, ItemState.FAILED})


def retryable(outcome: pl.Expr, status_code: pl.Expr, *, cancelled_by_user: bool) -> pl.Expr:
    """Outcomes worth another attempt: transient HTTP errors, expiry, missing results, cancellation by the
    provider (not when the user cancelled)."""
    transient_http = (outcome == Outcome.HTTP_ERROR) & ((status_code == 429) | (status_code >= 500))
    lost = outcome.is_in([Outcome.EXPIRED.value, Outcome.MISSING.value])
    cancelled = (outcome == Outcome.CANCELLED) & pl.lit(not cancelled_by_user)
    return (transient_http | lost | cancelled).fill_null(False)


def classify(status: pl.DataFrame, policy: RetryPolicy, *, cancelled_by_user: bool) -> pl.DataFrame:
    """`status` (warehouse.items.ITEM_STATUS_SCHEMA) with an `item_state` column."""
    outcome, tries = pl.col("outcome"), pl.col("tries")
    newer_attempt_out = pl.col("last_plan_id").is_not_null() & (
        pl.col("outcome_plan_id").is_null() | (pl.col("outcome_plan_id") < pl.col("last_plan_id")))
    state = (
        pl.when(outcome == Outcome.SUCCEEDED).then(pl.lit(ItemState.SUCCEEDED.value))
        .when(newer_attempt_out).then(pl.lit(ItemState.IN_FLIGHT.value))
        .when(outcome.is_null()).then(pl.lit(ItemState.UNACCOUNTED.value))
        .when(retryable(outcome, pl.col("status_code"), cancelled_by_user=cancelled_by_user)
              & (tries < policy.max_attempts)).then(pl.lit(ItemState.RETRY.value))
        .otherwise(pl.lit(ItemState.FAILED.value))
    )
    return status.with_columns(state.alias("item_state"))


@dataclass(frozen=True)
class MonthReport:
    """A month's accounting: what the checks and the UI show."""

    state: MonthState
    attempt: int
    n_items: int  # items of the month's current plan
    by_state: dict[str, int]  # item states (ItemState values), zeros included
    by_outcome: dict[str, int]  # final outcomes of final items
    by_attempt: dict[str, int]  # final items by the attempt that decided them
    failure_share: float  # final failures / items
    max_failure_share: float
    source_items_missing: list[str] = field(default_factory=list)  # source items not in the plan (examples)
    n_source_items_missing: int = 0

    @property
    def n_unaccounted(self) -> int:
        return self.by_state.get(ItemState.UNACCOUNTED, 0) + self.n_source_items_missing

    @property
    def accounted_for(self) -> bool:
        return self.n_unaccounted == 0

    @property
    def finished(self) -> bool:
        return self.state in (MonthState.DONE, MonthState.DONE_WITH_FAILURES, MonthState.CANCELLED)

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready dict that `from_record` reads back (the ledger keeps the last one a collect made)."""
        return {"state": self.state.value, "attempt": self.attempt, "n_items": self.n_items,
                "by_state": self.by_state, "by_outcome": self.by_outcome, "by_attempt": self.by_attempt,
                "failure_share": self.failure_share, "max_failure_share": self.max_failure_share,
                "source_items_missing": self.source_items_missing,
                "n_source_items_missing": self.n_source_items_missing}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MonthReport:
        return cls(MonthState(record["state"]), int(record["attempt"]), int(record["n_items"]),
                   dict(record["by_state"]), dict(record["by_outcome"]), dict(record["by_attempt"]),
                   float(record["failure_share"]), float(record["max_failure_share"]),
                   list(record["source_items_missing"]), int(record["n_source_items_missing"]))

    def summary(self) -> str:
        parts = [f"{self.by_state.get(s, 0)} {s.replace('_', ' ')}" for s in ItemState if self.by_state.get(s)]
        return f"{self.state.value.replace('_', ' ')} (attempt {self.attempt}): " + (", ".join(parts) or "no items")


def month_state(classified: pl.DataFrame, *, cancelled_by_user: bool, retry_planned: bool,
                current: MonthState) -> MonthState:
    counts = classified["item_state"].value_counts()
    states = set(counts["item_state"].to_list())
    if ItemState.IN_FLIGHT in states:
        return current if current in (MonthState.WAITING, MonthState.RETRYING) else MonthState.WAITING
    if retry_planned or ItemState.RETRY in states:
        return MonthState.RETRYING
    if cancelled_by_user:
        return MonthState.CANCELLED
    if states <= {ItemState.SUCCEEDED}:
        return MonthState.DONE
    return MonthState.DONE_WITH_FAILURES


def report(classified: pl.DataFrame, *, state: MonthState, attempt: int, policy: RetryPolicy,
           source_item_ids: pl.Series | None = None) -> MonthReport:
    by_state = dict.fromkeys((s.value for s in ItemState), 0)
    for item_state, n in classified.lazy().group_by("item_state").len().collect().iter_rows():
        by_state[item_state] = n
    # Lazy, so only the columns counted are read: a month of a million items is not copied to be counted.
    final = classified.lazy().filter(pl.col("item_state").is_in([s.value for s in FINAL_ITEM_STATES]))
    by_outcome = {str(k): n for k, n in final.group_by("outcome").len().sort("outcome").collect().iter_rows()}
    by_attempt = {str(k): n for k, n in final.group_by("attempt").len().sort("attempt").collect().iter_rows()}
    n_items = classified.height
    failures = by_state[ItemState.FAILED]
    missing: list[str] = []
    n_missing = 0
    if source_item_ids is not None:
        item_ids = source_item_ids.cast(pl.String)
        # By 64-bit hashes (8 bytes an id, not the strings again): an id counts as planned only if some planned
        # id hashes the same, so a missing one is missed only on a 64-bit collision.
        planned = classified["item_id"].cast(pl.String).hash(seed=0)
        absent = item_ids.filter(~item_ids.hash(seed=0).is_in(planned.implode()))
        n_missing, missing = absent.len(), absent.head(5).to_list()
    return MonthReport(state, attempt, n_items, by_state, by_outcome, by_attempt,
                       failures / n_items if n_items else 0.0, policy.max_failure_share, missing, n_missing)

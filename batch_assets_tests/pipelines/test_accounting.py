"""Item states and month states from outcomes: what is retried, what is final, what the month becomes."""

from __future__ import annotations

import polars as pl

from batch_assets.ledger.records import MonthState
from batch_assets.pipelines.accounting import ItemState, classify, month_state, report
from batch_assets.pipelines.spec import RetryPolicy
from batch_assets.warehouse.items import ITEM_STATUS_SCHEMA


def _status(*rows: tuple[str, int, int | None, str | None, int | None, int | None]) -> pl.DataFrame:
    """(item, tries, last plan, outcome, status code, outcome plan)"""
    return pl.DataFrame([{"item_id": item, "tries": tries, "last_plan_id": last,
                          "outcome": outcome, "status_code": code, "error_code": None, "outcome_plan_id": plan,
                          "attempt": plan, "batch_id": "x" if plan else None, "custom_id": item}
                         for item, tries, last, outcome, code, plan in rows], schema=ITEM_STATUS_SCHEMA)


def test_each_outcome_lands_in_its_item_state() -> None:
    status = _status(
        ("ok", 1, 1, "succeeded", 200, 1),
        ("bad-request", 1, 1, "http_error", 400, 1),
        ("rate-limited", 1, 1, "http_error", 429, 1),
        ("server-error", 2, 2, "http_error", 503, 2),
        ("server-error-3x", 3, 3, "http_error", 500, 3),
        ("expired", 1, 1, "expired", None, 1),
        ("cancelled", 1, 1, "cancelled", None, 1),
        ("in-flight", 2, 2, "http_error", 500, 1),
        ("never-back", 1, 1, None, None, None),
        ("lost", 0, None, None, None, None),
    )
    states = dict(classify(status, RetryPolicy(max_attempts=3), cancelled_by_user=False)
                  .select("item_id", "item_state").iter_rows())
    assert states == {
        "ok": "succeeded", "bad-request": "failed", "rate-limited": "retry", "server-error": "retry",
        "server-error-3x": "failed", "expired": "retry", "cancelled": "retry", "in-flight": "in_flight",
        "never-back": "in_flight", "lost": "unaccounted"}
    by_user = dict(classify(status, RetryPolicy(), cancelled_by_user=True).select("item_id", "item_state")
                   .iter_rows())
    assert by_user["cancelled"] == "failed"  # a user's cancel is never retried


def test_the_month_state_follows_its_items() -> None:
    def state(*item_states: str, cancelled: bool = False) -> MonthState:
        frame = pl.DataFrame({"item_state": list(item_states)}, schema={"item_state": pl.String})
        return month_state(frame, cancelled_by_user=cancelled, retry_planned=False, current=MonthState.WAITING)

    assert state("succeeded", "succeeded") == MonthState.DONE
    assert state() == MonthState.DONE  # an empty month
    assert state("succeeded", "failed") == MonthState.DONE_WITH_FAILURES
    assert state("succeeded", "retry") == MonthState.RETRYING
    assert state("succeeded", "in_flight") == MonthState.WAITING
    assert state("succeeded", "failed", cancelled=True) == MonthState.CANCELLED


def test_the_report_counts_and_flags_what_is_missing() -> None:
    classified = classify(_status(("a", 1, 1, "succeeded", 200, 1), ("b", 1, 1, "http_error", 400, 1)),
                          RetryPolicy(max_failure_share=0.1), cancelled_by_user=False)
    result = report(classified, state=MonthState.DONE_WITH_FAILURES, attempt=1, policy=RetryPolicy(
        max_failure_share=0.1), source_item_ids=pl.Series(["a", "b", "c"]))
    assert result.by_state[ItemState.SUCCEEDED] == 1 and result.by_state[ItemState.FAILED] == 1
    assert result.by_outcome == {"http_error": 1, "succeeded": 1} and result.by_attempt == {"1": 2}
    assert result.failure_share == 0.5 and result.n_source_items_missing == 1 and not result.accounted_for
    assert result.source_items_missing == ["c"]
    assert "done with failures (attempt 1): 1 succeeded, 1 failed" == result.summary()

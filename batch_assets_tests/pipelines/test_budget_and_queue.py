"""The money rules on their own: estimate ranges, cap messages, queue room, tier limits."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from batch_assets.batching.queue_limits import limit_for, parse_limits, tier_limits
from batch_assets.batching.request_files import RequestFile
from batch_assets.ledger.records import FileState, NewFile, PlanKind
from batch_assets.ledger.store import Ledger, ledger_url
from batch_assets.pipelines.budget import BudgetExceeded, OutputGuess, check_caps, estimate_plan
from batch_assets.pipelines.queue import enqueued_tokens, fits, limit_key, reserve
from batch_assets.pipelines.spec import BudgetPolicy
from batch_assets.queue_limits import enqueued_token_limits_from_env

MARCH = date(2024, 3, 1)


def _file(tokens: int, requests: int, cap: int | None) -> RequestFile:
    return RequestFile(Path("f.jsonl"), "/v1/chat/completions", "gpt-4o-mini", requests, 100, tokens, 0,
                       max_output_tokens=cap)


def test_the_estimate_is_a_range_from_history_to_every_requests_cap() -> None:
    estimate = estimate_plan("gpt-4o-mini", [_file(1_000_000, 1000, 32_000)], OutputGuess(6.0, "history"))
    assert estimate is not None and estimate.upper is not None
    assert estimate.expected.output_tokens == 6000 and estimate.upper.output_tokens == 32_000
    assert estimate.expected.batch_usd == pytest.approx(1_000_000 * 0.075 / 1e6 + 6000 * 0.30 / 1e6)
    assert "expected, at most $0.085" in estimate.describe()
    unbounded = estimate_plan("gpt-4o-mini", [_file(10, 1, None)], OutputGuess(6.0, "default"))
    assert unbounded is not None and unbounded.upper is None
    assert estimate_plan("no-such-model", [_file(10, 1, 5)], OutputGuess(1.0, "default")) is None


def test_caps_refuse_with_the_estimate_the_cap_and_how_to_raise_it() -> None:
    estimate = estimate_plan("gpt-4o-mini", [_file(1_000_000, 1000, 32_000)], OutputGuess(6.0, "history"))
    policy = BudgetPolicy(max_cost_per_submission_usd=0.05)
    with pytest.raises(BudgetExceeded, match=r"up to \$0\.085.*per-submission cap of \$0\.05.*sentiment_requests"):
        check_caps(policy, estimate, pipeline="sentiment", month=MARCH, committed=0,
                   requests_asset="sentiment_requests")
    with pytest.raises(BudgetExceeded, match=r"already stands for \$0\.95.*monthly cap of \$1\.00"):
        check_caps(BudgetPolicy(max_cost_per_month_usd=1.0), estimate, pipeline="sentiment", month=MARCH,
                   committed=0.95, requests_asset="sentiment_requests")
    check_caps(BudgetPolicy(max_cost_per_month_usd=1.0), estimate, pipeline="sentiment", month=MARCH,
               committed=0.5, requests_asset="sentiment_requests")  # fits
    unbounded = estimate_plan("gpt-4o-mini", [_file(10, 1, None)], OutputGuess(6.0, "default"))
    with pytest.raises(BudgetExceeded, match="no upper bound: set max_tokens"):
        check_caps(policy, unbounded, pipeline="sentiment", month=MARCH, committed=0,
                   requests_asset="sentiment_requests")
    check_caps(BudgetPolicy(), unbounded, pipeline="sentiment", month=MARCH, committed=0,
               requests_asset="sentiment_requests")  # no caps: nothing to check


def test_tier_limits_and_overrides() -> None:
    assert tier_limits(1)["gpt-4o-mini"] == 2_000_000 and tier_limits(4)["text-embedding-3-small"] == 500_000_000
    assert parse_limits("gpt-4o=5_000, text-embedding-3-small=7") == {"gpt-4o": 5000, "text-embedding-3-small": 7}
    with pytest.raises(ValueError, match="model=tokens"):
        parse_limits("gpt-4o")
    assert limit_for("gpt-4o-mini-2024-07-18", {"gpt-4o-mini": 9}) == 9  # a snapshot shares its base's limit
    assert enqueued_token_limits_from_env({}, "local") == {}
    assert enqueued_token_limits_from_env({}, "openai")["gpt-4o"] == 90_000
    assert enqueued_token_limits_from_env({"BATCH_ASSETS_OPENAI_TIER": "4",
                                           "BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS": "gpt-4o=1"}, "openai")["gpt-4o"] == 1
    with pytest.raises(ValueError, match="BATCH_ASSETS_OPENAI_TIER"):
        enqueued_token_limits_from_env({"BATCH_ASSETS_OPENAI_TIER": "9"}, "openai")


def test_room_is_taken_by_files_being_created_or_running(tmp_path: Path) -> None:
    limits = {"gpt-4o-mini": 100}
    with Ledger(ledger_url(tmp_path)) as ledger:
        plan = ledger.add_plan(pipeline="p", month="2024-03-01", attempt=1, kind=PlanKind.INITIAL,
                               endpoint="/v1/chat/completions", settings="{}", n_items=3, files=[
                                   NewFile(f"s{i}", f"f{i}", "/v1/chat/completions", "gpt-4o-mini-2024-07-18", 1, 60)
                                   for i in range(3)])
        first, second, third = ledger.files(plan_id=plan.plan_id)
        assert limit_key(first.model, limits) == "gpt-4o-mini"
        assert reserve(ledger, first, limits)  # nothing enqueued: it goes
        assert enqueued_tokens(ledger, limits) == {"gpt-4o-mini": 60}
        assert not reserve(ledger, second, limits)  # 60 + 60 > 100: it waits
        assert ledger.file(plan.plan_id, "s1").state == FileState.QUEUED  # type: ignore[union-attr]
        ledger.update_file(plan.plan_id, "s0", state=FileState.ENDED)  # the first batch ended: room again
        assert fits(third, limits, enqueued_tokens(ledger, limits))
        assert reserve(ledger, second, limits)

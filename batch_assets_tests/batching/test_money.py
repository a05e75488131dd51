"""Estimates as a range, and dollars written for people."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batch_assets.batching.money import (
    CostRange,
    describe_cost,
    describe_range,
    estimate_cost_range,
    format_usd,
    max_output_tokens,
)
from batch_assets.batching.pricing import Cost, ModelPrice, UnknownModelPrice, estimate_cost


@pytest.mark.parametrize(("amount", "text"), [
    (0.000884775, "$0.00088"),
    (1234.5, "$1,234.50"),
    (1_234_567.891, "$1,234,567.89"),
    (0, "$0.00"),
    (0.0, "$0.00"),
    (0.5, "$0.50"),
    (0.01, "$0.01"),
    (0.012345, "$0.012"),
    (0.1234, "$0.12"),
    (0.999, "$1.00"),
    (0.000999, "$0.001"),
    (0.0105, "$0.011"),
    (3e-8, "$0.00000003"),
    (1.005, "$1.01"),
    (12.0, "$12.00"),
    (-2.5, "-$2.50"),
    (-0.0000001, "-$0.0000001"),
    (Decimal("0.0625"), "$0.063"),
    (None, "unknown"),
])
def test_format_usd(amount: float | Decimal | None, text: str) -> None:
    assert format_usd(amount) == text


def test_format_usd_refuses_what_is_not_an_amount() -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_usd(float("nan"))


def test_range_expected_from_history_upper_from_max_tokens() -> None:
    # 1,000 gpt-4o-mini requests, 150k input tokens, ~6 output tokens expected, at most 32 each.
    cost_range = estimate_cost_range("gpt-4o-mini", 150_000, 1_000, 6, 32)
    assert cost_range == CostRange(expected=estimate_cost("gpt-4o-mini", 150_000, 6_000),
                                   upper=estimate_cost("gpt-4o-mini", 150_000, 32_000))
    assert cost_range.expected.batch_usd < cost_range.upper.batch_usd
    # (150k x 0.15 + 32k x 0.60) / 1e6 / 2
    assert cost_range.upper.batch_usd == pytest.approx(0.02085, abs=1e-9)


def test_expected_output_is_rounded_up_and_never_above_the_cap() -> None:
    assert estimate_cost_range("gpt-4o-mini", 0, 3, 2.5, 10).expected.output_tokens == 8  # ceil(7.5)
    assert estimate_cost_range("gpt-4o-mini", 0, 3, 500, 10).expected.output_tokens == 30


def test_embeddings_have_no_output() -> None:
    cost_range = estimate_cost_range("text-embedding-3-small", 1_000_000, 500, 0, 0)
    assert cost_range.expected == cost_range.upper == Cost(1_000_000, 0, 0.01, 0.02, 0.01)
    assert max_output_tokens({"model": "text-embedding-3-small", "input": "x"}, embeddings=True) == 0


def test_no_max_tokens_means_no_upper_bound_and_says_what_to_set() -> None:
    with pytest.raises(ValueError, match="no upper bound: set max_completion_tokens"):
        estimate_cost_range("gpt-5-mini", 1_000, 10, 100, None)


def test_max_output_tokens_reads_the_request_body() -> None:
    assert max_output_tokens({"max_completion_tokens": 64}) == 64
    assert max_output_tokens({"max_tokens": 32}) == 32
    assert max_output_tokens({"messages": []}) is None
    with pytest.raises(ValueError, match="max_tokens"):
        max_output_tokens({"max_tokens": -1})


def test_range_validates_and_prices_unknown_models_only_when_told() -> None:
    with pytest.raises(ValueError, match="requests"):
        estimate_cost_range("gpt-4o-mini", 10, -1, 1, 1)
    with pytest.raises(ValueError, match="expected_output_per_request"):
        estimate_cost_range("gpt-4o-mini", 10, 1, float("nan"), 1)
    with pytest.raises(UnknownModelPrice):
        estimate_cost_range("my-model", 10, 1, 1, 1)
    price = ModelPrice(Decimal("1"), Decimal("2"))
    assert estimate_cost_range("my-model", 1_000_000, 1, 0, 1_000_000, price=price).upper.standard_usd == 3.0


def test_descriptions_for_metadata_text() -> None:
    assert describe_cost(Cost(1, 1, 1.25, 2.5, 1.25)) == "$1.25 at batch rates ($2.50 standard, $1.25 saved)"
    assert describe_cost(None) == "unknown (no price for this model)"
    cost_range = CostRange(Cost(1, 1, 0.000884775, 0.00176955, 0.000884775), Cost(1, 1, 0.45, 0.9, 0.45))
    assert describe_range(cost_range) == "$0.00088 expected, at most $0.45 (batch rates)"

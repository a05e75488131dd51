"""Dollars written for people."""

from __future__ import annotations

from decimal import Decimal

import pytest

from batch_assets.batching.money import describe_cost, format_usd
from batch_assets.batching.pricing import Cost


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


def test_descriptions_for_metadata_text() -> None:
    assert describe_cost(Cost(1, 1, 1.25, 2.5, 1.25)) == "$1.25 at batch rates ($2.50 standard, $1.25 saved)"
    assert describe_cost(None) == "unknown (no price for this model)"

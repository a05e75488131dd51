"""Dollars written for people (run metadata, CLI tables, error messages)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from batch_assets.batching.pricing import Cost

__all__ = ["describe_cost", "format_usd"]

_MIN_DECIMALS: Final = 2
_SIGNIFICANT: Final = 2


def format_usd(amount: float | Decimal | None) -> str:
    """Dollars for people: ``1234.5 -> "$1,234.50"``, ``0.000884775 -> "$0.00088"``, ``None -> "unknown"``.

    Two decimals, thousands separated; amounts under a dollar keep up to two significant digits so a
    small cost never shows as "$0.00" (0 itself does).
    """
    if amount is None:
        return "unknown"
    value = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    if not value.is_finite():
        raise ValueError(f"cannot format {amount!r} as dollars")
    sign, value = ("-" if value < 0 else ""), abs(value)
    decimals = _MIN_DECIMALS
    if 0 < value < 1:
        decimals = max(_MIN_DECIMALS, _SIGNIFICANT - 1 - value.adjusted())
        rounded = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
        if rounded.adjusted() > value.adjusted():  # 0.000999 rounds up to 0.0010: keep two significant digits
            decimals = max(_MIN_DECIMALS, decimals - 1)
    rounded = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    if rounded == 0:
        sign = ""
    text = f"{rounded:,.{decimals}f}"
    if decimals > _MIN_DECIMALS:  # "$0.01", not "$0.010"
        text = text.rstrip("0").ljust(len(text.split(".")[0]) + 1 + _MIN_DECIMALS, "0")
    return f"{sign}${text}"


def describe_cost(cost: Cost | None) -> str:
    """One line for metadata text: ``"$1.25 at batch rates ($2.50 standard, $1.25 saved)"``."""
    if cost is None:
        return "unknown (no price for this model)"
    return (f"{format_usd(cost.batch_usd)} at batch rates ({format_usd(cost.standard_usd)} standard, "
            f"{format_usd(cost.saving_usd)} saved)")


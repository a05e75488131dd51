"""Money before a submission (an estimate as a range) and dollars written for people.

An estimate is a range because output is unknown until the answers come back:

* ``expected``: input tokens (exact) plus the expected output per request (the caller's figure, e.g. the
  p50 of ``completion_tokens`` in the history of this pipeline and model) times the requests;
* ``upper``: input tokens plus the most each request may write (``max_completion_tokens`` /
  ``max_tokens``) times the requests. OpenAI never bills more output than that, reasoning tokens included
  (``max_completion_tokens`` bounds them too). Embeddings write nothing: their upper output is 0.

Both assume no cached input (nobody knows the cache ahead), so neither under-estimates on that account.
A budget cap must use ``upper``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

from batch_assets.batching.pricing import Cost, ModelPrice, estimate_cost

__all__ = ["CostRange", "describe_cost", "describe_range", "estimate_cost_range", "format_usd",
           "max_output_tokens"]

_MIN_DECIMALS: Final = 2
_SIGNIFICANT: Final = 2


@dataclass(frozen=True)
class CostRange:
    """What a submission is expected to cost, and the most it can cost."""

    expected: Cost
    upper: Cost


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def estimate_cost_range(
    model: str,
    input_tokens: int,
    requests: int,
    expected_output_per_request: float,
    max_output_per_request: int | None,
    *,
    price: ModelPrice | None = None,
) -> CostRange:
    """Expected and upper cost of ``requests`` requests holding ``input_tokens`` input tokens in all.

    ``expected_output_per_request`` may be fractional (a median); the total is rounded up, and capped at
    ``max_output_per_request`` (a request cannot write more). ``max_output_per_request`` is the request's
    ``max_completion_tokens`` / ``max_tokens`` (0 for embeddings); None means the requests set no limit, so
    there is no upper bound and this raises, saying what to set. Unknown model ->
    :class:`~batch_assets.batching.pricing.UnknownModelPrice` (unless ``price`` is given).
    """
    _check_count("input_tokens", input_tokens)
    _check_count("requests", requests)
    if max_output_per_request is None:
        raise ValueError(
            f"the {model} requests set no max_tokens / max_completion_tokens, so their cost has no upper bound: "
            "set max_completion_tokens (or max_tokens) in the pipeline settings"
        )
    _check_count("max_output_per_request", max_output_per_request)
    expected = expected_output_per_request
    if isinstance(expected, bool) or not isinstance(expected, (int, float)) or not math.isfinite(expected) \
            or expected < 0:
        raise ValueError(f"expected_output_per_request must be a finite number >= 0, got {expected!r}")
    per_request = min(float(expected), float(max_output_per_request))
    expected_output = math.ceil(per_request * requests)
    return CostRange(
        expected=estimate_cost(model, input_tokens, expected_output, price=price),
        upper=estimate_cost(model, input_tokens, max_output_per_request * requests, price=price),
    )


def max_output_tokens(body: Mapping[str, Any], *, embeddings: bool = False) -> int | None:
    """The most output one request body may produce: 0 for embeddings, else its ``max_completion_tokens``
    or ``max_tokens`` (None when it sets neither: unbounded)."""
    if embeddings:
        return 0
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if value is not None:
            return _check_count(key, value)
    return None


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


def describe_range(cost_range: CostRange | None) -> str:
    """One line for metadata text: ``"$0.12 expected, at most $0.45 (batch rates)"``."""
    if cost_range is None:
        return "unknown (no price for this model)"
    return (f"{format_usd(cost_range.expected.batch_usd)} expected, at most "
            f"{format_usd(cost_range.upper.batch_usd)} (batch rates)")

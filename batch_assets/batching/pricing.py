"""A dated price table, and batch vs standard cost of tokens.

Prices are USD per 1M tokens at OpenAI's standard (synchronous) rate, as published on OpenAI's
pricing page on :data:`PRICES_AS_OF`; the Batch API bills 50% of that (``batch_discount = 0.5``).
Prices change: update the table and the date together. Cached-input discounts are not modelled.

Model names resolve (:func:`resolve_price_model`) in this order: an exact table entry; a dated
snapshot ``<base>-YYYY-MM-DD`` (or a known ``-MMDD`` alias) to its base, unless the snapshot has
its own entry (``gpt-4o-2024-05-13`` kept the launch price); any ``local/...`` model (the local
engine) is free. Anything else is unknown:

* :func:`estimate_cost` raises :class:`UnknownModelPrice` (before you spend, an unknown price must
  stop you: add the model to ``PRICES`` or pass ``price=ModelPrice(...)``);
* :func:`actual_cost` returns ``None`` (the money is already spent; record "unknown", not 0).

Arithmetic is exact (Decimal); the dollar amounts are rounded to 1e-9 USD once, at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

PRICES_AS_OF: Final = "2025-08-07"
BATCH_DISCOUNT: Final = Decimal("0.5")
_PER_TOKEN: Final = Decimal(1_000_000)
_USD_QUANTUM: Final = Decimal("1e-9")
LOCAL_PREFIX: Final = "local/"


@dataclass(frozen=True)
class ModelPrice:
    """Standard USD per 1M tokens; ``batch_discount`` is the fraction the Batch API takes off."""

    input_per_1m: Decimal
    output_per_1m: Decimal
    batch_discount: Decimal = BATCH_DISCOUNT

    def __post_init__(self) -> None:
        for name in ("input_per_1m", "output_per_1m", "batch_discount"):
            value = Decimal(str(getattr(self, name)))
            if value < 0:
                raise ValueError(f"ModelPrice.{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        if self.batch_discount > 1:
            raise ValueError(f"ModelPrice.batch_discount must be <= 1, got {self.batch_discount}")


def _p(input_per_1m: str, output_per_1m: str = "0") -> ModelPrice:
    return ModelPrice(Decimal(input_per_1m), Decimal(output_per_1m))


_FREE: Final = _p("0")

PRICES: Final = MappingProxyType({
    # chat / reasoning (input, output)
    "gpt-5": _p("1.25", "10.00"),
    "gpt-5-mini": _p("0.25", "2.00"),
    "gpt-5-nano": _p("0.05", "0.40"),
    "gpt-4.1": _p("2.00", "8.00"),
    "gpt-4.1-mini": _p("0.40", "1.60"),
    "gpt-4.1-nano": _p("0.10", "0.40"),
    "gpt-4o": _p("2.50", "10.00"),
    "gpt-4o-2024-05-13": _p("5.00", "15.00"),
    "gpt-4o-mini": _p("0.15", "0.60"),
    "o3": _p("2.00", "8.00"),
    "o4-mini": _p("1.10", "4.40"),
    "gpt-3.5-turbo": _p("0.50", "1.50"),
    # embeddings (input only)
    "text-embedding-3-small": _p("0.02"),
    "text-embedding-3-large": _p("0.13"),
    "text-embedding-ada-002": _p("0.10"),
    # the local engine's models: free
    "local/all-MiniLM-L6-v2": _FREE,
    "local/SmolLM2-135M-Instruct": _FREE,
    "local/fake-embedder": _FREE,
    "local/fake-chat": _FREE,
})

# Snapshots named -MMDD that bill at their base price.
_SNAPSHOT_ALIASES: Final = MappingProxyType({"gpt-3.5-turbo-0125": "gpt-3.5-turbo"})
_DATED: Final = re.compile(r"^(?P<base>.+)-\d{4}-\d{2}-\d{2}$")


class UnknownModelPrice(LookupError):
    """No price is known for a model."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price for model {model!r} in the table (prices as of {PRICES_AS_OF}): add it to "
            "batch_assets.batching.pricing.PRICES, or pass price=ModelPrice(input_per_1m=..., "
            "output_per_1m=...)"
        )


def resolve_price_model(model: str) -> str | None:
    """The table entry ``model`` bills as, or None if unknown (rules in the module docstring)."""
    if model in PRICES:
        return model
    if model in _SNAPSHOT_ALIASES:
        return _SNAPSHOT_ALIASES[model]
    match = _DATED.match(model)
    if match and match["base"] in PRICES:
        return match["base"]
    return None


def price_for(model: str) -> ModelPrice:
    """The price of ``model``; raises :class:`UnknownModelPrice` if it has none."""
    resolved = resolve_price_model(model)
    if resolved is not None:
        return PRICES[resolved]
    if model.startswith(LOCAL_PREFIX):
        return _FREE
    raise UnknownModelPrice(model)


@dataclass(frozen=True)
class Cost:
    """Cost of some tokens at batch and at standard rates; ``saving_usd = standard - batch``."""

    input_tokens: int
    output_tokens: int
    batch_usd: float
    standard_usd: float
    saving_usd: float

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _round(Decimal(str(self.batch_usd)) + Decimal(str(other.batch_usd))),
            _round(Decimal(str(self.standard_usd)) + Decimal(str(other.standard_usd))),
            _round(Decimal(str(self.saving_usd)) + Decimal(str(other.saving_usd))),
        )

    @classmethod
    def zero(cls) -> Cost:
        return cls(0, 0, 0.0, 0.0, 0.0)


def _round(value: Decimal) -> float:
    return float(value.quantize(_USD_QUANTUM))


def _cost(price: ModelPrice, input_tokens: int, output_tokens: int) -> Cost:
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    standard = (input_tokens * price.input_per_1m + output_tokens * price.output_per_1m) / _PER_TOKEN
    batch = standard * (1 - price.batch_discount)
    return Cost(input_tokens, output_tokens, _round(batch), _round(standard), _round(standard - batch))


def estimate_cost(
    model: str, input_tokens: int, expected_output_tokens: int = 0, *, price: ModelPrice | None = None
) -> Cost:
    """Cost before submitting. Unknown model -> :class:`UnknownModelPrice` (unless ``price`` is given)."""
    return _cost(price or price_for(model), input_tokens, expected_output_tokens)


def actual_cost(
    model: str, prompt_tokens: int, completion_tokens: int, *, price: ModelPrice | None = None
) -> Cost | None:
    """Cost of reported usage. Unknown model -> None: the cost is unknown, not zero."""
    if price is None:
        try:
            price = price_for(model)
        except UnknownModelPrice:
            return None
    return _cost(price, prompt_tokens, completion_tokens)

"""A dated price table, and batch vs standard cost of tokens (cached input and reasoning included).

Source: OpenAI's API pricing page, ``platform.openai.com/docs/pricing`` (now served as
``developers.openai.com/api/docs/pricing``), section by section:

* Standard rates of text tokens and fine-tuned models: the page as captured on 2026-02-07
  (:data:`PRICES_AS_OF`).
* Batch rates (its "Batch" tab), embeddings and legacy models: a full text copy of the same page with
  all four tabs (Batch, Flex, Standard, Priority) from late November 2025 (it lists gpt-5.1, released
  2025-11-13, and not yet gpt-5.2). Its Standard figures equal the 2026-02-07 ones row for row.
* gpt-5.2 (released after that copy): Standard from the 2026-02-07 capture, Batch from a March 2026
  capture of the Batch tab.

The figures are carried over, not computed: the tests compare this table with a price data file kept
beside them (``batch_assets_tests/batching/data/openai_prices.json``). Prices change: update the table,
the data file and the date together.

How OpenAI bills (and this module prices) a request, per 1M tokens:

* ``prompt_tokens`` includes ``cached_tokens``: the uncached part bills at the input rate, the cached part
  at the cached-input rate (where the page lists none, "-", cached tokens bill as ordinary input).
* The Batch API bills ``1 - batch_discount`` (50%) of the standard input and output rates. Its cached
  input rate is the Batch tab's own figure: listed for the gpt-5 family (half the standard cached rate),
  "-" for gpt-4.1, gpt-4o and the o-series, whose cached tokens then bill at the batch input rate.
* ``reasoning_tokens`` are billed as output and are already inside ``completion_tokens``: they are never
  added on top.

Model names resolve (:func:`resolve_price_model`) in this order, with no prefix matching (so
``gpt-4o-mini-tts`` never bills as ``gpt-4o-mini``, nor ``o3-mini`` as ``o3``):

1. an exact table entry;
2. an explicit alias: ``text-embedding-ada-002-v2`` (the name the API answers with for ada-002) and
   ``-MMDD`` snapshots that bill at their base price (``gpt-3.5-turbo-0125``). There is no general
   ``-MMDD`` rule on purpose: ``gpt-3.5-turbo-1106`` and ``-0613`` bill at other prices than
   ``gpt-3.5-turbo``;
3. a dated snapshot ``<base>-YYYY-MM-DD`` bills as ``<base>``, unless the snapshot has its own entry
   (``gpt-4o-2024-05-13`` kept its launch price);
4. a fine-tuned model ``ft:<base snapshot>:<org>:<suffix>:<id>`` bills at the fine-tuned rates of its base
   snapshot (entries ``ft:<snapshot>``), never at the base model's own rates (fine-tuned inference costs
   more). ``ft:gpt-4o-2024-08-06`` is left out: the page's Batch figures for it (2.225 / 0.90 / 12.50) are
   no uniform discount of its Standard ones, so we would rather say "unknown" than guess;
5. any ``local/...`` model (the local engine) is free.

Anything else is unknown: :func:`estimate_cost` raises :class:`UnknownModelPrice` (before you spend, an
unknown price must stop you: add the model to ``PRICES`` or pass ``price=ModelPrice(...)``);
:func:`actual_cost` returns ``None`` (the money is already spent; record "unknown", not 0).

Not in the table: models priced by context length (gpt-5.4 and later bill more above 272K input tokens),
audio, realtime, image and search models, and the Flex / Priority tiers.

Arithmetic is exact (Decimal); the dollar amounts are rounded to 1e-9 USD once, at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

PRICES_AS_OF: Final = "2026-02-07"  # read from OpenAI's pricing page that day
BATCH_DISCOUNT: Final = Decimal("0.5")
_PER_TOKEN: Final = Decimal(1_000_000)
_USD_QUANTUM: Final = Decimal("1e-9")
LOCAL_PREFIX: Final = "local/"
FINE_TUNED_PREFIX: Final = "ft:"


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens at the standard rate, and what the Batch API takes off.

    ``cached_input_per_1m``: the standard cached-input rate (None: the page lists none, cached tokens bill
    as input). ``batch_cached_input_per_1m``: the Batch tab's cached-input rate (None: cached tokens in a
    batch bill at the batch input rate). ``batch_discount``: the fraction the Batch API takes off the
    input and output rates.
    """

    input_per_1m: Decimal
    output_per_1m: Decimal
    cached_input_per_1m: Decimal | None = None
    batch_cached_input_per_1m: Decimal | None = None
    batch_discount: Decimal = BATCH_DISCOUNT

    def __post_init__(self) -> None:
        for name in ("input_per_1m", "output_per_1m", "cached_input_per_1m", "batch_cached_input_per_1m",
                     "batch_discount"):
            raw = getattr(self, name)
            if raw is None:
                continue
            value = Decimal(str(raw))
            if value < 0:
                raise ValueError(f"ModelPrice.{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        if self.batch_discount > 1:
            raise ValueError(f"ModelPrice.batch_discount must be <= 1, got {self.batch_discount}")

    @property
    def batch_input_per_1m(self) -> Decimal:
        return self.input_per_1m * (1 - self.batch_discount)

    @property
    def batch_output_per_1m(self) -> Decimal:
        return self.output_per_1m * (1 - self.batch_discount)

    @property
    def cached_rate_per_1m(self) -> Decimal:
        """What a cached input token costs at the standard rate."""
        return self.input_per_1m if self.cached_input_per_1m is None else self.cached_input_per_1m

    @property
    def batch_cached_rate_per_1m(self) -> Decimal:
        """What a cached input token costs in a batch."""
        if self.batch_cached_input_per_1m is None:
            return self.batch_input_per_1m
        return self.batch_cached_input_per_1m


def _p(input_per_1m: str, cached: str | None, output_per_1m: str, batch_cached: str | None = None) -> ModelPrice:
    """One row as the page shows it: standard input, cached input, output; the Batch tab's cached input."""
    return ModelPrice(Decimal(input_per_1m), Decimal(output_per_1m), None if cached is None else Decimal(cached),
                      None if batch_cached is None else Decimal(batch_cached))


_FREE: Final = _p("0", None, "0")

PRICES: Final = MappingProxyType({
    # text tokens: standard input, cached input, output; Batch tab cached input (None where it shows "-")
    "gpt-5.2": _p("1.75", "0.175", "14.00", "0.0875"),
    "gpt-5.1": _p("1.25", "0.125", "10.00", "0.0625"),
    "gpt-5": _p("1.25", "0.125", "10.00", "0.0625"),
    "gpt-5-mini": _p("0.25", "0.025", "2.00", "0.0125"),
    "gpt-5-nano": _p("0.05", "0.005", "0.40", "0.0025"),
    "gpt-5-pro": _p("15.00", None, "120.00"),
    "gpt-4.1": _p("2.00", "0.50", "8.00"),
    "gpt-4.1-mini": _p("0.40", "0.10", "1.60"),
    "gpt-4.1-nano": _p("0.10", "0.025", "0.40"),
    "gpt-4o": _p("2.50", "1.25", "10.00"),
    "gpt-4o-2024-05-13": _p("5.00", None, "15.00"),
    "gpt-4o-mini": _p("0.15", "0.075", "0.60"),
    "o1": _p("15.00", "7.50", "60.00"),
    "o1-pro": _p("150.00", None, "600.00"),
    "o1-mini": _p("1.10", "0.55", "4.40"),
    "o3": _p("2.00", "0.50", "8.00"),
    "o3-pro": _p("20.00", None, "80.00"),
    "o3-mini": _p("1.10", "0.55", "4.40"),
    "o4-mini": _p("1.10", "0.275", "4.40"),
    "gpt-3.5-turbo": _p("0.50", None, "1.50"),
    # embeddings (input only)
    "text-embedding-3-small": _p("0.02", None, "0"),
    "text-embedding-3-large": _p("0.13", None, "0"),
    "text-embedding-ada-002": _p("0.10", None, "0"),
    # fine-tuned models, by base snapshot (inference rates, without the data-sharing discount)
    "ft:o4-mini-2025-04-16": _p("4.00", "1.00", "16.00", "0.50"),
    "ft:gpt-4.1-2025-04-14": _p("3.00", "0.75", "12.00", "0.50"),
    "ft:gpt-4.1-mini-2025-04-14": _p("0.80", "0.20", "3.20", "0.10"),
    "ft:gpt-4.1-nano-2025-04-14": _p("0.20", "0.05", "0.80", "0.025"),
    "ft:gpt-4o-mini-2024-07-18": _p("0.30", "0.15", "1.20", "0.075"),
    "ft:gpt-3.5-turbo": _p("3.00", None, "6.00"),
    # the local engine's models: free
    "local/all-MiniLM-L6-v2": _FREE,
    "local/SmolLM2-135M-Instruct": _FREE,
    "local/fake-embedder": _FREE,
    "local/fake-chat": _FREE,
})

# Names that bill as another entry (see the module docstring for why -MMDD is not a general rule).
_ALIASES: Final = MappingProxyType({
    "text-embedding-ada-002-v2": "text-embedding-ada-002",
    "gpt-3.5-turbo-0125": "gpt-3.5-turbo",
})
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


def _resolve_plain(model: str) -> str | None:
    if model in PRICES:
        return model
    if model in _ALIASES:
        return _ALIASES[model]
    match = _DATED.match(model)
    if match and match["base"] in PRICES:
        return match["base"]
    return None


def resolve_price_model(model: str) -> str | None:
    """The table entry ``model`` bills as, or None if unknown (rules in the module docstring)."""
    if model.startswith(FINE_TUNED_PREFIX):
        base = model[len(FINE_TUNED_PREFIX):].split(":", 1)[0]
        key = FINE_TUNED_PREFIX + _ALIASES.get(base, base)
        return key if base and key in PRICES else None
    return _resolve_plain(model)


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
    """Cost of some tokens at batch and at standard rates; ``saving_usd = standard - batch``.

    ``input_tokens`` includes ``cached_tokens`` (as OpenAI's ``prompt_tokens`` does).
    """

    input_tokens: int
    output_tokens: int
    batch_usd: float
    standard_usd: float
    saving_usd: float
    cached_tokens: int = 0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            _round(Decimal(str(self.batch_usd)) + Decimal(str(other.batch_usd))),
            _round(Decimal(str(self.standard_usd)) + Decimal(str(other.standard_usd))),
            _round(Decimal(str(self.saving_usd)) + Decimal(str(other.saving_usd))),
            self.cached_tokens + other.cached_tokens,
        )

    @classmethod
    def zero(cls) -> Cost:
        return cls(0, 0, 0.0, 0.0, 0.0)


def _round(value: Decimal) -> float:
    return float(value.quantize(_USD_QUANTUM))


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _cost(price: ModelPrice, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> Cost:
    _check_count("input_tokens", input_tokens)
    _check_count("output_tokens", output_tokens)
    _check_count("cached_tokens", cached_tokens)
    if cached_tokens > input_tokens:
        raise ValueError(
            f"cached_tokens ({cached_tokens}) exceeds input_tokens ({input_tokens}): cached tokens are part of "
            "the prompt tokens (usage.prompt_tokens_details.cached_tokens), pass the total as input_tokens"
        )
    uncached = input_tokens - cached_tokens
    standard = (uncached * price.input_per_1m + cached_tokens * price.cached_rate_per_1m
                + output_tokens * price.output_per_1m) / _PER_TOKEN
    batch = (uncached * price.batch_input_per_1m + cached_tokens * price.batch_cached_rate_per_1m
             + output_tokens * price.batch_output_per_1m) / _PER_TOKEN
    return Cost(input_tokens, output_tokens, _round(batch), _round(standard), _round(standard - batch),
                cached_tokens)


def estimate_cost(
    model: str,
    input_tokens: int,
    expected_output_tokens: int = 0,
    *,
    cached_tokens: int = 0,
    price: ModelPrice | None = None,
) -> Cost:
    """Cost before submitting. Unknown model -> :class:`UnknownModelPrice` (unless ``price`` is given).

    ``cached_tokens`` (of ``input_tokens``) defaults to 0: before a run nobody knows what the cache will hold,
    and assuming no hits never under-estimates.
    """
    return _cost(price or price_for(model), input_tokens, expected_output_tokens, cached_tokens)


def actual_cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    cached_tokens: int | None = 0,
    reasoning_tokens: int | None = 0,
    price: ModelPrice | None = None,
) -> Cost | None:
    """Cost of reported usage. Unknown model -> None: the cost is unknown, not zero.

    Pass ``usage.prompt_tokens_details.cached_tokens`` as ``cached_tokens`` (priced at the cached rate) and
    ``usage.completion_tokens_details.reasoning_tokens`` as ``reasoning_tokens``: they are checked to be part
    of ``completion_tokens`` and are not billed again. None (the field was absent) counts as 0.
    """
    reasoning = _check_count("reasoning_tokens", reasoning_tokens or 0)
    if isinstance(completion_tokens, int) and reasoning > completion_tokens:
        raise ValueError(
            f"reasoning_tokens ({reasoning}) exceeds completion_tokens ({completion_tokens}): reasoning tokens are "
            "part of the completion tokens OpenAI reports; check which usage fields were passed"
        )
    if price is None:
        try:
            price = price_for(model)
        except UnknownModelPrice:
            return None
    return _cost(price, prompt_tokens, completion_tokens, cached_tokens or 0)

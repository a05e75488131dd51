from __future__ import annotations

import datetime
import json
from decimal import Decimal
from pathlib import Path

import pytest

from batch_assets.batching.pricing import (
    FINE_TUNED_PREFIX,
    LOCAL_PREFIX,
    PRICES,
    PRICES_AS_OF,
    Cost,
    ModelPrice,
    UnknownModelPrice,
    actual_cost,
    estimate_cost,
    price_for,
    resolve_price_model,
)

PRICE_FILE = Path(__file__).parent / "data" / "openai_prices.json"

REQUIRED_MODELS = [
    "gpt-5.2", "gpt-5.1", "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o",
    "gpt-4o-mini", "o1", "o3", "o3-mini", "o4-mini", "gpt-3.5-turbo", "text-embedding-3-small",
    "text-embedding-3-large", "text-embedding-ada-002", "local/all-MiniLM-L6-v2", "local/SmolLM2-135M-Instruct",
    "local/fake-embedder", "local/fake-chat",
]


def _figure(text: str) -> Decimal | None:
    return None if text == "-" else Decimal(text)


def _page_rows() -> dict[str, tuple[Decimal, Decimal | None, Decimal, Decimal, Decimal | None, Decimal]]:
    """The data file as {table entry: (input, cached, output, batch input, batch cached, batch output)}."""
    data = json.loads(PRICE_FILE.read_text(encoding="utf-8"))
    rows = {}
    for model, row in data["text_tokens"].items():
        rows[model] = (*map(_figure, row["standard"]), *map(_figure, row["batch"]))
    for model, row in data["legacy_models"].items():
        (inp, out), (b_inp, b_out) = row["standard"], row["batch"]
        rows[model] = (Decimal(inp), None, Decimal(out), Decimal(b_inp), None, Decimal(b_out))
    for model, row in data["embeddings"].items():
        rows[model] = (Decimal(row["cost"]), None, Decimal(0), Decimal(row["batch_cost"]), None, Decimal(0))
    for model, row in data["fine_tuning"].items():
        rows[FINE_TUNED_PREFIX + model] = (*map(_figure, row["standard"]), *map(_figure, row["batch"]))
    return rows


def test_price_table_equals_the_price_data_file() -> None:
    data = json.loads(PRICE_FILE.read_text(encoding="utf-8"))
    assert data["as_of"] == PRICES_AS_OF
    datetime.date.fromisoformat(PRICES_AS_OF)
    page = _page_rows()
    assert set(page) == {m for m in PRICES if not m.startswith(LOCAL_PREFIX)}
    for model, (inp, cached, out, b_inp, b_cached, b_out) in page.items():
        price = PRICES[model]
        assert (price.input_per_1m, price.cached_input_per_1m, price.output_per_1m) == (inp, cached, out), model
        assert (price.batch_input_per_1m, price.batch_cached_input_per_1m, price.batch_output_per_1m) == (
            b_inp, b_cached, b_out), model
    assert "ft:gpt-4o-2024-08-06" not in PRICES  # the page's own figures disagree (see the data file)


def test_table_covers_the_current_families() -> None:
    assert set(REQUIRED_MODELS) <= set(PRICES)
    assert all(p.batch_discount == Decimal("0.5") for p in PRICES.values())


def test_embedding_prices_per_million() -> None:
    assert estimate_cost("text-embedding-3-small", 1_000_000).standard_usd == 0.02
    assert estimate_cost("text-embedding-3-large", 1_000_000).standard_usd == 0.13
    assert estimate_cost("text-embedding-ada-002", 1_000_000) == Cost(1_000_000, 0, 0.05, 0.10, 0.05)


def test_batch_is_half_of_standard_and_saving_is_the_difference() -> None:
    cost = estimate_cost("gpt-4o-mini", 2_000_000, 1_000_000)  # 2 x 0.15 + 1 x 0.60
    assert cost == Cost(input_tokens=2_000_000, output_tokens=1_000_000, batch_usd=0.45, standard_usd=0.9,
                        saving_usd=0.45)
    for model in REQUIRED_MODELS:
        c = estimate_cost(model, 123_457, 9_876)
        assert c.batch_usd == pytest.approx(c.standard_usd / 2, abs=1e-9)
        assert c.saving_usd == pytest.approx(c.standard_usd - c.batch_usd, abs=1e-9)


def test_small_amounts_are_exact_to_a_nanodollar() -> None:
    # 3 tokens of text-embedding-3-small: 6e-8 standard, 3e-8 batch; floats would show 5.9999e-08.
    assert estimate_cost("text-embedding-3-small", 3) == Cost(3, 0, 3e-8, 6e-8, 3e-8)
    assert estimate_cost("gpt-5-nano", 1, 1).standard_usd == 4.5e-7


# -- cached input ---------------------------------------------------------------------------------------------
def test_cached_input_is_priced_at_the_cached_rates() -> None:
    # gpt-5: 400k uncached x 1.25 + 600k cached x 0.125 + 100k out x 10 = 0.5 + 0.075 + 1.0 standard;
    # batch: 400k x 0.625 + 600k x 0.0625 (the Batch tab's cached rate) + 100k x 5 = 0.25 + 0.0375 + 0.5.
    assert actual_cost("gpt-5", 1_000_000, 100_000, cached_tokens=600_000) == Cost(
        1_000_000, 100_000, batch_usd=0.7875, standard_usd=1.575, saving_usd=0.7875, cached_tokens=600_000)
    # gpt-4.1: standard cached rate 0.50, but the Batch tab lists no cached rate ("-"): batch input, 1.00.
    # standard 400k x 2 + 600k x 0.5 + 100k x 8 = 1.9; batch 400k x 1 + 600k x 1 + 100k x 4 = 1.4.
    assert actual_cost("gpt-4.1", 1_000_000, 100_000, cached_tokens=600_000) == Cost(
        1_000_000, 100_000, batch_usd=1.4, standard_usd=1.9, saving_usd=0.5, cached_tokens=600_000)
    # a model with no cached rate at all bills cached tokens as input
    assert actual_cost("gpt-5-pro", 1_000, 0, cached_tokens=1_000) == Cost(1_000, 0, 0.0075, 0.015, 0.0075, 1_000)


def test_cached_tokens_lower_the_bill_and_none_means_zero() -> None:
    full = actual_cost("gpt-5-mini", 10_000, 500)
    cached = actual_cost("gpt-5-mini", 10_000, 500, cached_tokens=8_192)
    assert full is not None and cached is not None
    assert cached.batch_usd < full.batch_usd and cached.standard_usd < full.standard_usd
    assert actual_cost("gpt-5-mini", 10_000, 500, cached_tokens=None, reasoning_tokens=None) == full


def test_cached_tokens_cannot_exceed_the_prompt() -> None:
    with pytest.raises(ValueError, match="cached_tokens .* exceeds input_tokens .* part of the prompt"):
        actual_cost("gpt-5", 100, 0, cached_tokens=101)
    with pytest.raises(ValueError, match="cached_tokens"):
        estimate_cost("gpt-5", 100, cached_tokens=-1)


# -- reasoning ------------------------------------------------------------------------------------------------
def test_reasoning_tokens_are_output_and_not_counted_twice() -> None:
    # o4-mini: 1,000 prompt + 700 completion (640 of them reasoning): (1000 x 1.10 + 700 x 4.40) / 1e6.
    with_reasoning = actual_cost("o4-mini", 1_000, 700, reasoning_tokens=640)
    assert with_reasoning == actual_cost("o4-mini", 1_000, 700) == Cost(1_000, 700, 0.00209, 0.00418, 0.00209)
    assert with_reasoning != actual_cost("o4-mini", 1_000, 700 + 640)
    with pytest.raises(ValueError, match="reasoning tokens are part of the completion tokens"):
        actual_cost("o4-mini", 1_000, 100, reasoning_tokens=101)


# -- model names ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "entry"), [
    ("text-embedding-ada-002-v2", "text-embedding-ada-002"),  # what the API answers for ada-002
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-2024-11-20", "gpt-4o"),
    ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # a snapshot that kept its own (launch) price
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("gpt-5-2025-08-07", "gpt-5"),
    ("gpt-5-mini-2025-08-07", "gpt-5-mini"),  # not gpt-5
    ("gpt-5.2-2025-12-11", "gpt-5.2"),
    ("o3-2025-04-16", "o3"),
    ("o3-mini-2025-01-31", "o3-mini"),  # not o3
    ("o4-mini-2025-04-16", "o4-mini"),
    ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),  # an -MMDD snapshot billed at its base price
    ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "ft:gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4o-mini-2024-07-18:acme:sentiment-v2:xyz789", "ft:gpt-4o-mini-2024-07-18"),
    ("ft:gpt-4.1-2025-04-14:acme::id", "ft:gpt-4.1-2025-04-14"),
    ("ft:gpt-3.5-turbo-0125:acme::id", "ft:gpt-3.5-turbo"),
])
def test_snapshot_names_resolve_to_their_price_rows(model: str, entry: str) -> None:
    assert resolve_price_model(model) == entry
    assert price_for(model) == PRICES[entry]


@pytest.mark.parametrize("model", [
    "text-embedding-ada-002-v3",
    "text-embedding-3-small-v2",
    "gpt-4o-mini-tts",  # a different model that shares a prefix
    "gpt-4o-mini-tts-2025-03-20",
    "gpt-4o-mini-search-preview-2025-03-11",
    "gpt-4o-audio-preview-2024-12-17",
    "o3-deep-research-2025-06-26",
    "gpt-5-chat-latest",
    "gpt-5-codex",
    "gpt-3.5-turbo-1106",  # -MMDD snapshots with their own, different price: no general -MMDD rule
    "gpt-3.5-turbo-0613",
    "gpt-4o-mini-2024-07-18-extra",
    "gpt-4o-mini-20240718",
    "GPT-4o",
    "ft:gpt-4o-2024-08-06:acme::id",  # no trustworthy batch price on the page
    "ft:gpt-4o-mini:acme::id",  # fine-tuned rates are per snapshot
    "ft:",
    "ft::acme::id",
    "",
])
def test_names_without_a_price_row_do_not_borrow_one(model: str) -> None:
    assert resolve_price_model(model) is None
    assert actual_cost(model, 10, 10) is None


def test_fine_tuned_models_bill_at_fine_tuned_rates_not_the_base_models() -> None:
    tuned = price_for("ft:gpt-4o-mini-2024-07-18:acme::abc123")
    assert tuned != price_for("gpt-4o-mini")
    assert (tuned.input_per_1m, tuned.output_per_1m) == (Decimal("0.30"), Decimal("1.20"))


def test_local_models_are_free() -> None:
    for model in ["local/all-MiniLM-L6-v2", "local/SmolLM2-135M-Instruct", "local/fake-embedder",
                  "local/fake-chat", "local/some-new-model"]:
        assert estimate_cost(model, 10**9, 10**9) == Cost(10**9, 10**9, 0.0, 0.0, 0.0)


def test_unknown_model_estimate_raises_with_what_to_do() -> None:
    with pytest.raises(UnknownModelPrice, match="add it to .*PRICES.*or pass price=") as info:
        estimate_cost("my-finetune", 10)
    assert info.value.model == "my-finetune"
    assert isinstance(info.value, LookupError)


def test_unknown_model_actual_cost_is_none_not_zero() -> None:
    assert actual_cost("my-finetune", 10, 10) is None
    assert actual_cost("gpt-4o", 1_000_000, 0) == Cost(1_000_000, 0, 1.25, 2.5, 1.25)


def test_explicit_price_overrides_the_table() -> None:
    price = ModelPrice(input_per_1m=Decimal("1"), output_per_1m=Decimal("2"))
    assert estimate_cost("my-finetune", 1_000_000, 1_000_000, price=price).standard_usd == 3.0
    assert actual_cost("gpt-4o", 1_000_000, 0, price=price) == Cost(1_000_000, 0, 0.5, 1.0, 0.5)
    assert ModelPrice(0.3, 1.2).input_per_1m == Decimal("0.3")  # type: ignore[arg-type]
    assert ModelPrice(Decimal(1), Decimal(1), cached_input_per_1m=Decimal("0.1")).batch_cached_rate_per_1m == \
        Decimal("0.5")
    with pytest.raises(ValueError):
        ModelPrice(Decimal("-1"), Decimal("0"))
    with pytest.raises(ValueError, match="cached_input_per_1m"):
        ModelPrice(Decimal("1"), Decimal("0"), cached_input_per_1m=Decimal("-0.1"))
    with pytest.raises(ValueError):
        ModelPrice(Decimal("1"), Decimal("1"), batch_discount=Decimal("1.5"))


def test_token_counts_are_validated() -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        estimate_cost("gpt-4o", -1)
    with pytest.raises(ValueError, match="output_tokens"):
        actual_cost("gpt-4o", 1, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reasoning_tokens"):
        actual_cost("gpt-4o", 1, 1, reasoning_tokens=-1)


def test_costs_add_up() -> None:
    total = sum((estimate_cost("text-embedding-3-small", 1) for _ in range(3)), Cost.zero())
    assert total == Cost(3, 0, 3e-8, 6e-8, 3e-8)
    both = actual_cost("gpt-5", 1_000, 0, cached_tokens=400) + actual_cost("gpt-5", 1_000, 0, cached_tokens=100)
    assert both.cached_tokens == 500 and both.input_tokens == 2_000

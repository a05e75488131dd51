from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from batch_assets.batching.pricing import (
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

REQUIRED_MODELS = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-5", "gpt-5-mini", "gpt-5-nano",
    "o3", "o4-mini", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-3-large",
    "text-embedding-ada-002", "local/all-MiniLM-L6-v2", "local/SmolLM2-135M-Instruct", "local/fake-embedder",
    "local/fake-chat",
]


def test_table_is_dated_and_complete() -> None:
    datetime.date.fromisoformat(PRICES_AS_OF)
    assert set(REQUIRED_MODELS) <= set(PRICES)
    assert all(p.batch_discount == Decimal("0.5") for p in PRICES.values())


def test_embedding_prices_per_million() -> None:
    assert estimate_cost("text-embedding-3-small", 1_000_000).standard_usd == 0.02
    assert estimate_cost("text-embedding-3-large", 1_000_000).standard_usd == 0.13
    assert estimate_cost("text-embedding-ada-002", 1_000_000).standard_usd == 0.10


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


def test_dated_snapshots_resolve_to_their_base() -> None:
    assert resolve_price_model("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert resolve_price_model("gpt-4.1-2025-04-14") == "gpt-4.1"
    assert resolve_price_model("gpt-5-mini-2025-08-07") == "gpt-5-mini"
    assert resolve_price_model("gpt-3.5-turbo-0125") == "gpt-3.5-turbo"
    assert price_for("o3-2025-04-16") == PRICES["o3"]
    # A snapshot that kept its own price is not folded into the base.
    assert resolve_price_model("gpt-4o-2024-05-13") == "gpt-4o-2024-05-13"
    assert price_for("gpt-4o-2024-05-13") != price_for("gpt-4o")
    assert resolve_price_model("gpt-4o-mini-tts") is None


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
    with pytest.raises(ValueError):
        ModelPrice(Decimal("-1"), Decimal("0"))
    with pytest.raises(ValueError):
        ModelPrice(Decimal("1"), Decimal("1"), batch_discount=Decimal("1.5"))


def test_token_counts_are_validated() -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        estimate_cost("gpt-4o", -1)
    with pytest.raises(ValueError, match="output_tokens"):
        actual_cost("gpt-4o", 1, 1.5)  # type: ignore[arg-type]


def test_costs_add_up() -> None:
    total = sum((estimate_cost("text-embedding-3-small", 1) for _ in range(3)), Cost.zero())
    assert total == Cost(3, 0, 3e-8, 6e-8, 3e-8)

"""OpenAI's enqueued-token limits ("batch queue limit") per model and usage tier.

OpenAI caps the input tokens a model may have enqueued across all of an organisation's batches at once; a
batch over it is created and then ends ``failed`` with ``token_limit_exceeded``. The figures below are the ones
OpenAI published in its rate-limit tables (tier 1 for the models listed there, tier 4 from the tier-4 page, and
gpt-4o-mini at every tier from its model page), read in 2025. Your organisation's Limits page
(platform.openai.com/settings/organization/limits) is the authority: set ``BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS``
to its figures. A model with no figure here is not held back; if its limit bites, the failed batch is queued
again rather than lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from batch_assets.batching.pricing import resolve_price_model

_TIER_1: Final = {
    "gpt-4o": 90_000, "gpt-4o-mini": 2_000_000, "gpt-4-turbo": 90_000, "gpt-4": 100_000,
    "gpt-3.5-turbo": 2_000_000, "o1-mini": 2_000_000,
    "text-embedding-3-large": 3_000_000, "text-embedding-3-small": 3_000_000, "text-embedding-ada-002": 3_000_000,
}
_TIER_4: Final = {
    "gpt-4o": 80_000_000, "gpt-4o-mini": 1_000_000_000, "gpt-4-turbo": 80_000_000, "gpt-4": 30_000_000,
    "gpt-3.5-turbo": 100_000_000,
    "text-embedding-3-large": 500_000_000, "text-embedding-3-small": 500_000_000,
    "text-embedding-ada-002": 500_000_000,
}
TIER_LIMITS: Final = MappingProxyType({
    1: MappingProxyType(_TIER_1),
    2: MappingProxyType({"gpt-4o-mini": 20_000_000}),
    3: MappingProxyType({"gpt-4o-mini": 40_000_000}),
    4: MappingProxyType(_TIER_4),
    5: MappingProxyType({"gpt-4o-mini": 15_000_000_000}),
})


def parse_limits(text: str) -> dict[str, int]:
    """``"gpt-4o-mini=2000000, text-embedding-3-small=3000000"`` -> ``{model: tokens}``."""
    limits: dict[str, int] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        model, sep, raw = part.partition("=")
        try:
            tokens = int(raw.strip().replace("_", ""))
        except ValueError:
            tokens = -1
        if not sep or not model.strip() or tokens < 1:
            raise ValueError(f"enqueued-token limit {part.strip()!r} must read model=tokens, e.g. gpt-4o-mini=2000000")
        limits[model.strip()] = tokens
    return limits


def tier_limits(tier: int) -> dict[str, int]:
    if tier not in TIER_LIMITS:
        raise ValueError(f"OpenAI usage tier {tier} is not one of {sorted(TIER_LIMITS)}")
    return dict(TIER_LIMITS[tier])


def limit_for(model: str, limits: Mapping[str, int]) -> int | None:
    """The enqueued-token limit that applies to ``model`` (snapshot names share their base model's)."""
    if model in limits:
        return limits[model]
    base = resolve_price_model(model)
    return limits.get(base) if base else None

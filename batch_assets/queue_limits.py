"""The enqueued-token limits in effect, from the environment (read with the other platform settings)."""

from __future__ import annotations

from collections.abc import Mapping

from batch_assets.batching.queue_limits import parse_limits, tier_limits

DEFAULT_OPENAI_TIER = 1


def enqueued_token_limits_from_env(env: Mapping[str, str], provider: str) -> dict[str, int]:
    """``BATCH_ASSETS_OPENAI_TIER`` picks OpenAI's published limits (default tier 1 with the openai provider,
    none with the local engine); ``BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS`` (model=tokens,...) overrides them."""
    tier_raw = (env.get("BATCH_ASSETS_OPENAI_TIER") or "").strip()
    try:
        tier = int(tier_raw) if tier_raw else (DEFAULT_OPENAI_TIER if provider == "openai" else None)
        limits = tier_limits(tier) if tier is not None else {}
        limits.update(parse_limits(env.get("BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS") or ""))
    except ValueError as exc:
        raise ValueError(f"BATCH_ASSETS_OPENAI_TIER / BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS: {exc}") from None
    return limits

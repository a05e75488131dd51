"""Chooses where batches go: the local engine (default, free) or OpenAI / any compatible endpoint."""

from __future__ import annotations

import os
from collections.abc import Mapping

import openai

from batch_assets.batching.client import BatchClient, openai_client_from_env

PROVIDERS = ("local", "openai")
DEFAULT_PROVIDER = "local"  # nobody pays by accident


class ProviderError(ValueError):
    pass


def provider_from_env(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    provider = (env.get("BATCH_ASSETS_PROVIDER") or DEFAULT_PROVIDER).strip().lower()
    check_provider(provider)
    return provider


def check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ProviderError(
            f"BATCH_ASSETS_PROVIDER={provider!r} is not a provider: set it to 'local' (the default, runs on "
            "this machine for free) or 'openai' (needs OPENAI_API_KEY; OPENAI_BASE_URL for any OpenAI-compatible "
            "batch endpoint)"
        )


def make_openai_client(provider: str | None = None, env: Mapping[str, str] | None = None) -> openai.OpenAI:
    """The SDK client for a provider; local settings come from BATCH_ASSETS_LOCAL_* variables."""
    provider = provider or provider_from_env(env)
    check_provider(provider)
    if provider == "openai":
        return openai_client_from_env(env)
    from batch_assets.local.config import EngineConfig
    from batch_assets.local.transport import local_openai_client

    return local_openai_client(EngineConfig.from_env(dict(os.environ if env is None else env)))


def make_batch_client(provider: str | None = None, env: Mapping[str, str] | None = None) -> BatchClient:
    return BatchClient(make_openai_client(provider, env))

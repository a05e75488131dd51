"""Clients for the local Batch API in both ways a user reaches it: in process and over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.config import EngineConfig
from batch_assets.local.transport import local_openai_client
from batch_assets_tests.local.helpers import LocalServer

ClientFactory = Callable[..., openai.OpenAI]


@pytest.fixture(params=["in_process", "http"])
def make_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ClientFactory]:
    """make_client(**EngineConfig fields, token=None, client_token=None, max_retries=2) -> openai.OpenAI."""
    yield from _client_factory(request.param, tmp_path)


@pytest.fixture
def make_http_client(tmp_path: Path) -> Iterator[ClientFactory]:
    yield from _client_factory("http", tmp_path)


def _client_factory(mode: str, tmp_path: Path) -> Iterator[ClientFactory]:
    servers: list[LocalServer] = []

    def factory(*, token: str | None = None, client_token: str | None = None, max_retries: int = 2,
                **config_fields: object) -> openai.OpenAI:
        config_fields.setdefault("state_dir", tmp_path / "local_api")
        config_fields.setdefault("worker_idle_seconds", 3.0)
        config = EngineConfig(**config_fields)  # type: ignore[arg-type]
        if mode == "in_process":
            return local_openai_client(config, max_retries=max_retries)
        server = LocalServer(LocalBatchAPI(config, token=token))
        servers.append(server)
        return openai.OpenAI(api_key=client_token or token or "unused", max_retries=max_retries,
                             base_url=f"http://127.0.0.1:{server.port}/v1")

    yield factory
    for server in servers:
        server.stop()

"""In-process access: an httpx transport that hands the openai SDK's requests to LocalBatchAPI.

openai 3.x builds on the `httpx2` package; this transport is an `httpx2.BaseTransport`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import openai

from batch_assets.local.api import ApiRequest, ChunkReader, LocalBatchAPI
from batch_assets.local.config import EngineConfig

LOCAL_BASE_URL = "http://local-batch-api/v1"


class _ByteStream(httpx2.SyncByteStream):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class LocalTransport(httpx2.BaseTransport):
    def __init__(self, api: LocalBatchAPI) -> None:
        self.api = api

    def close(self) -> None:
        """Called when the SDK client closes: release the state store's connections and any loaded model."""
        self.api.close()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        # The body is pulled from the SDK's stream only as the handler reads it (never spooled ahead).
        api_request = ApiRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.url.params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=ChunkReader.from_iterable(request.stream),
        )
        response = self.api.handle(api_request)
        if isinstance(response.body, bytes | bytearray):
            return httpx2.Response(response.status, headers=response.headers, content=bytes(response.body))
        return httpx2.Response(response.status, headers=response.headers, stream=_ByteStream(response.body))


def local_openai_client(config: EngineConfig | None = None, *, max_retries: int = 2,
                        api: LocalBatchAPI | None = None) -> openai.OpenAI:
    """An `openai.OpenAI` whose every request is served in this process by the local Batch API."""
    api = api or LocalBatchAPI(config)
    return openai.OpenAI(
        api_key="local",
        base_url=LOCAL_BASE_URL,
        max_retries=max_retries,
        http_client=httpx2.Client(transport=LocalTransport(api), base_url=LOCAL_BASE_URL, timeout=600),
    )


__all__ = ["LOCAL_BASE_URL", "LocalTransport", "local_openai_client"]

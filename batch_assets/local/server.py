"""Serves the local Batch API over HTTP (ASGI, run by uvicorn) for any OpenAI SDK or tool."""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
import uvicorn

from batch_assets.local.api import ApiRequest, ApiResponse, LocalBatchAPI
from batch_assets.local.config import EngineConfig
from batch_assets.local.transport import SPOOL_BYTES

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class LocalBatchASGIApp:
    def __init__(self, api: LocalBatchAPI) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        more = True
        while more:
            message = await receive()
            body.write(message.get("body", b""))
            more = message.get("more_body", False)
        body.seek(0)
        request = ApiRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode())),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=body,  # type: ignore[arg-type]
        )
        try:
            # Model calls and disk I/O block: keep them off the event loop.
            response: ApiResponse = await anyio.to_thread.run_sync(self.api.handle, request)
        finally:
            body.close()
        headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if isinstance(response.body, bytes | bytearray):
            await send({"type": "http.response.body", "body": bytes(response.body)})
            return
        chunks = iter(response.body)
        while True:
            chunk = await anyio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def serve(host: str = "127.0.0.1", port: int = 8001, *, token: str | None = None,
          config: EngineConfig | None = None) -> None:
    api = LocalBatchAPI(config, token=token)
    uvicorn.run(LocalBatchASGIApp(api), host=host, port=port, log_level="info")

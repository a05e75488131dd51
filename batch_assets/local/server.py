"""Serves the local Batch API over HTTP (ASGI, run by uvicorn) for any OpenAI SDK or tool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.from_thread
import uvicorn

from batch_assets.local.api import ApiRequest, ApiResponse, ChunkReader, LocalBatchAPI
from batch_assets.local.config import EngineConfig

Scope = MutableMapping[str, Any]
Receive = Callable[[], Coroutine[Any, Any, MutableMapping[str, Any]]]  # anyio runs it from a thread
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
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        body = _ReceivedBody(receive, expected="transfer-encoding" in headers
                             or headers.get("content-length", "0") not in ("", "0"))
        request = ApiRequest(
            method=scope["method"],
            path=scope["path"],
            query=dict(parse_qsl(scope.get("query_string", b"").decode())),
            headers=headers,
            body=ChunkReader(body),
        )
        # Model calls and disk I/O block: keep them off the event loop. The handler pulls the body
        # from `receive` as it reads it, so what it never reads (an unauthenticated or oversized
        # upload) is never taken off the socket.
        response: ApiResponse = await anyio.to_thread.run_sync(self.api.handle, request)
        raw_headers = [(k.encode(), v.encode()) for k, v in response.headers.items()]
        if not body.finished:
            # The rest of the body was refused (no token, too large): close the connection instead of
            # letting the server drain it to keep the connection alive.
            raw_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": raw_headers})
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


class _ReceivedBody:
    """A blocking ``next_chunk`` for the handler's worker thread, pulling from the ASGI ``receive``."""

    def __init__(self, receive: Receive, *, expected: bool) -> None:
        self._receive = receive
        self.finished = not expected  # a request without a body (most GETs) has nothing left to refuse

    def __call__(self) -> bytes | None:
        while not self.finished:
            message = anyio.from_thread.run(self._receive)
            if message["type"] == "http.disconnect":
                self.finished = True
                break
            self.finished = not message.get("more_body", False)
            if message.get("body"):
                return message["body"]
        return None


def serve(host: str = "127.0.0.1", port: int = 8001, *, token: str | None = None,
          config: EngineConfig | None = None) -> None:
    api = LocalBatchAPI(config, token=token)
    uvicorn.run(LocalBatchASGIApp(api), host=host, port=port, log_level="info")

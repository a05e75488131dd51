"""A request and a response as the local API's handler sees them, whichever way they arrived.

The request body is a reader that pulls chunks only when the handler asks for them: the bearer
token is checked before anything is read, and an upload over the size limit stops being read
the moment it passes it. Nothing is spooled ahead of the handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson


class ChunkReader:
    """A file-like ``read`` over a source of chunks (``next_chunk()`` returns None at the end)."""

    def __init__(self, next_chunk: Callable[[], bytes | None]) -> None:
        self._next_chunk = next_chunk
        self._buffer = bytearray()
        self._done = False

    @classmethod
    def from_iterable(cls, chunks: Any) -> ChunkReader:
        iterator = iter(chunks)
        return cls(lambda: next(iterator, None))

    def _pull(self) -> bool:
        if self._done:
            return False
        chunk = self._next_chunk()
        if chunk is None:
            self._done = True
            return False
        self._buffer += chunk
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while self._pull():
                pass
        else:
            while len(self._buffer) < size and self._pull():
                pass
            if not self._buffer:
                return b""
        end = len(self._buffer) if size is None or size < 0 else min(size, len(self._buffer))
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data


@dataclass
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: ChunkReader


@dataclass
class ApiResponse:
    status: int
    body: bytes | Iterator[bytes]
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


def json_response(obj: Any, status: int = 200) -> ApiResponse:
    return ApiResponse(status, orjson.dumps(obj))


SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}

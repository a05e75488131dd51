"""Small helpers the local API tests share."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import openai
import orjson
from openai.types import Batch

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


def embedding_lines(texts: list[str], model: str = "text-embedding-3-small", **body: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/embeddings",
             "body": {"model": model, "input": text, **body}} for i, text in enumerate(texts)]


def chat_lines(prompts: list[str], model: str = "gpt-4o-mini", **body: Any) -> list[dict[str, Any]]:
    return [{"custom_id": f"chat-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "messages": [{"role": "user", "content": p}], **body}}
            for i, p in enumerate(prompts)]


def submit(client: openai.OpenAI, path: Path, endpoint: str, **kwargs: Any) -> Batch:
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=endpoint,  # type: ignore[arg-type]
                                 completion_window="24h", **kwargs)


def wait_terminal(client: openai.OpenAI, batch_id: str, timeout: float = 180.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        if time.monotonic() > deadline:
            raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout}s")
        time.sleep(0.2)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines() if line]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

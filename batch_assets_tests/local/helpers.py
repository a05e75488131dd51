"""Small helpers the local API tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import openai
import orjson
import uvicorn
from openai.types import Batch

from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.server import LocalBatchASGIApp

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


class LocalServer:
    """The local API served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, api: LocalBatchAPI) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(LocalBatchASGIApp(api), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the local API server did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def served_by_cli(state_dir: Path, token: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Runs `batch-assets local-api serve` in a subprocess until the block ends; yields its base URL."""
    port = free_port()
    environment = {**os.environ, "BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS": "3", **(env or {})}
    server = subprocess.Popen(
        [sys.executable, "-m", "batch_assets.cli", "local-api", "serve", "--port", str(port), "--token", token,
         "--state-dir", str(state_dir)], env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.batches.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield base_url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)

"""Conformance: a whole batch lifecycle on the real local engine, every answer validated against the
schemas of OpenAI's published OpenAPI spec (excerpt in data/openai_openapi_excerpt.json).

The official SDK drives it in process and over HTTP; a recording transport keeps every JSON answer
(and every streamed chunk) the SDK received, and each one is validated against the schema OpenAI
publishes for that route, errors against ``ErrorResponse``. Small on purpose: two Responses lines
at 16 output tokens, one cancelled batch, a few synchronous calls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest

from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.config import EngineConfig, FaultConfig
from batch_assets.local.transport import LOCAL_BASE_URL, LocalTransport
from batch_assets_tests.local.helpers import LocalServer, embedding_lines, read_lines, wait_terminal, write_jsonl
from batch_assets_tests.local.openapi_schemas import assert_conforms

pytestmark = pytest.mark.e2e

LABELS = ["positive", "negative", "neutral"]
TEXT_FORMAT = {"type": "json_schema", "name": "sentiment", "strict": True,
               "schema": {"type": "object", "additionalProperties": False, "required": ["label"],
                          "properties": {"label": {"type": "string", "enum": LABELS}}}}
# The schema OpenAI publishes for each route's 200 answer.
ROUTE_SCHEMAS = [
    ("POST", r"/v1/files", "OpenAIFile"),
    ("GET", r"/v1/files", "ListFilesResponse"),
    ("GET", r"/v1/files/[^/]+", "OpenAIFile"),
    ("DELETE", r"/v1/files/[^/]+", "DeleteFileResponse"),
    ("POST", r"/v1/batches", "Batch"),
    ("GET", r"/v1/batches", "ListBatchesResponse"),
    ("GET", r"/v1/batches/[^/]+", "Batch"),
    ("POST", r"/v1/batches/[^/]+/cancel", "Batch"),
    ("POST", r"/v1/responses", "Response"),
    ("POST", r"/v1/chat/completions", "CreateChatCompletionResponse"),
    ("POST", r"/v1/completions", "CreateCompletionResponse"),
    ("POST", r"/v1/embeddings", "CreateEmbeddingResponse"),
]


class Recording(httpx2.BaseTransport):
    """Passes requests on and keeps (method, path, status, JSON body or streamed chunks) of each answer."""

    def __init__(self, inner: httpx2.BaseTransport) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, int, Any]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self.inner.handle_request(request)
        kind = response.headers.get("content-type", "")
        if kind.startswith(("application/json", "text/event-stream")):
            content = b"".join(response.stream)  # type: ignore[union-attr]
            response.stream.close()  # type: ignore[union-attr]
            if kind.startswith("application/json"):
                payload: Any = orjson.loads(content)
            else:
                payload = [orjson.loads(event[6:]) for event in content.split(b"\n\n")
                           if event.startswith(b"data: {")]
            self.calls.append((request.method, request.url.path, response.status_code, payload))
            return httpx2.Response(response.status_code, headers=response.headers, content=content,
                                   request=request)
        return response


@pytest.fixture(params=["in_process", "http"])
def recorded_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[openai.OpenAI, Recording]]:
    # A short item delay keeps the second batch cancellable mid-way on a fast machine.
    config = EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=3.0,
                          faults=FaultConfig(item_delay_seconds=0.05))
    api = LocalBatchAPI(config)
    server = None
    if request.param == "in_process":
        recording, base_url = Recording(LocalTransport(api)), LOCAL_BASE_URL
    else:
        server = LocalServer(api)
        recording, base_url = Recording(httpx2.HTTPTransport()), f"http://127.0.0.1:{server.port}/v1"
    client = openai.OpenAI(api_key="local", base_url=base_url, max_retries=0,
                           http_client=httpx2.Client(transport=recording, base_url=base_url, timeout=120))
    yield client, recording
    if server is not None:
        server.stop()


def _responses_lines(texts: list[str]) -> list[dict[str, Any]]:
    return [{"custom_id": f"review-{i}", "method": "POST", "url": "/v1/responses",
             "body": {"model": "gpt-4o-mini", "instructions": "Classify the sentiment of the movie review.",
                      "input": text, "max_output_tokens": 16, "temperature": 0, "text": {"format": TEXT_FORMAT}}}
            for i, text in enumerate(texts)]


def test_a_batch_lifecycle_conforms_to_openais_spec(recorded_client, tmp_path: Path) -> None:
    client, recording = recorded_client
    started = time.monotonic()

    # upload, list, create, retrieve, list batches, wait, download
    path = write_jsonl(tmp_path / "reviews.jsonl", _responses_lines(["A warm, funny, moving film.",
                                                                      "Dull and far too long."]))
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch", limit=5).data]
    assert client.files.retrieve(uploaded.id).bytes == path.stat().st_size
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/responses", completion_window="24h",
                                  metadata={"suite": "conformance"})
    assert client.batches.retrieve(batch.id).endpoint == "/v1/responses"
    assert batch.id in [b.id for b in client.batches.list(limit=5).data]
    done = wait_terminal(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2 and done.error_file_id is None
    lines = read_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == ["review-0", "review-1"]
    for line in lines:
        assert_conforms("BatchRequestOutput", line)
        assert_conforms("Response", line["response"]["body"])
        response = line["response"]["body"]
        text = "".join(part["text"] for item in response["output"] for part in item["content"])
        assert response["usage"]["input_tokens"] > 10 and 0 < response["usage"]["output_tokens"] <= 16
        if response["status"] == "completed":
            assert orjson.loads(text)["label"] in LABELS  # text.format constrained the answer
        else:  # the schema's JSON did not fit in 16 tokens: incomplete, as OpenAI reports it
            assert response["incomplete_details"] == {"reason": "max_output_tokens"}
            assert response["usage"]["output_tokens"] == 16 and text.lstrip().startswith("{")
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"  # type: ignore[arg-type]

    # cancel a batch mid-way
    many = write_jsonl(tmp_path / "many.jsonl", embedding_lines([f"review {i}" for i in range(200)]))
    second = client.batches.create(input_file_id=client.files.create(file=many.open("rb"), purpose="batch").id,
                                   endpoint="/v1/embeddings", completion_window="24h")
    assert client.batches.cancel(second.id).status in ("cancelling", "cancelled")
    assert wait_terminal(client, second.id).status == "cancelled"

    # synchronous endpoints on the real models, streaming included
    response = client.responses.create(model="gpt-4o-mini", input="Say hi.", max_output_tokens=16)
    assert response.output_text and response.usage.output_tokens <= 16  # type: ignore[union-attr]
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", max_tokens=8, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "Say hi."}]))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 8
    assert client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi.", max_tokens=8).choices[0].text
    # float: the SDK asks for base64 by default, which the spec's Embedding schema does not describe
    embedded = client.embeddings.create(model="text-embedding-3-small", input="hi", encoding_format="float")
    assert len(embedded.data[0].embedding) == 384

    # errors
    for call, error in [
        (lambda: client.files.retrieve("file-missing"), openai.NotFoundError),
        (lambda: client.batches.retrieve("batch_missing"), openai.NotFoundError),
        (lambda: client.batches.cancel(batch.id), openai.ConflictError),
        (lambda: client.batches.create(input_file_id=uploaded.id, endpoint="/v1/moderations",  # type: ignore[arg-type]
                                       completion_window="24h"), openai.BadRequestError),
        (lambda: client.responses.create(model="gpt-4o-mini", input="x", max_output_tokens=4), openai.BadRequestError),
    ]:
        with pytest.raises(error):
            call()
    assert client.files.delete(uploaded.id).deleted

    # every answer the SDK received conforms to OpenAI's schema for its route
    checked: set[str] = set()
    for method, route, status, payload in recording.calls:
        if status >= 400:
            assert_conforms("ErrorResponse", payload)
            checked.add("ErrorResponse")
            continue
        name = next(n for m, pattern, n in ROUTE_SCHEMAS if m == method and re.fullmatch(pattern, route))
        if isinstance(payload, list):  # a stream: every chunk
            name = "CreateChatCompletionStreamResponse"
            assert payload, "an empty stream"
        for item in payload if isinstance(payload, list) else [payload]:
            assert_conforms(name, item)
        checked.add(name)
    assert checked == {name for _, _, name in ROUTE_SCHEMAS} - {"CreateChatCompletionResponse"} | {
        "CreateChatCompletionStreamResponse", "ErrorResponse"}
    print(f"conformance lifecycle: {len(recording.calls)} answers validated in {time.monotonic() - started:.1f}s")

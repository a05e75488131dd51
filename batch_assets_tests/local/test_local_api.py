"""The official openai SDK drives the local Batch API through the whole lifecycle, in process and over HTTP.

These run the real local models (all-MiniLM-L6-v2, SmolLM2-135M): they are the end-to-end proof that
a user's batch behaves as on OpenAI.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import orjson
import pytest

from batch_assets_tests.local.helpers import (
    chat_lines,
    embedding_lines,
    read_lines,
    submit,
    wait_terminal,
    write_jsonl,
)

pytestmark = pytest.mark.e2e

REVIEWS = [
    "A moving, beautifully acted film that stays with you.",
    "Dull, overlong and badly written; I walked out.",
    "The plot follows two brothers who inherit a farm.",
    "Funny, warm and surprisingly wise.",
    "A tedious mess with nothing to say.",
    "An ordinary thriller with a few good scenes.",
]
LABEL_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "sentiment", "strict": True,
        "schema": {"type": "object", "additionalProperties": False, "required": ["label"],
                   "properties": {"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}}},
    },
}


def test_embeddings_batch_happy_path(make_client, tmp_path: Path) -> None:
    client = make_client()
    path = write_jsonl(tmp_path / "in.jsonl", embedding_lines(REVIEWS))
    batch = submit(client, path, "/v1/embeddings", metadata={"pipeline": "embeddings", "month": "2024-03"})
    assert batch.status == "validating" and batch.id.startswith("batch_")
    assert batch.metadata == {"pipeline": "embeddings", "month": "2024-03"}

    batch = wait_terminal(client, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.total == batch.request_counts.completed == len(REVIEWS)
    assert batch.request_counts.failed == 0 and batch.error_file_id is None
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    lines = read_lines(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"doc-{i}" for i in range(len(REVIEWS)))
    for line in lines:
        assert line["id"].startswith("batch_req_") and line["error"] is None
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200
        assert body["model"] == "local/all-MiniLM-L6-v2"
        assert len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] > 3
    output_file = client.files.retrieve(batch.output_file_id)
    assert output_file.purpose == "batch_output" and output_file.bytes > 0


def test_chat_batch_with_json_schema_returns_valid_labels(make_client, tmp_path: Path) -> None:
    client = make_client()
    prompts = [f"Classify the sentiment of this movie review: {review}" for review in REVIEWS[:4]]
    lines = chat_lines(prompts, max_tokens=20, temperature=0, response_format=LABEL_FORMAT)
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", lines),
                                         "/v1/chat/completions").id)
    assert batch.status == "completed" and batch.request_counts.completed == 4
    assert batch.usage is not None and batch.usage.output_tokens > 0
    for line in read_lines(client, batch.output_file_id):
        body = line["response"]["body"]
        assert body["model"] == "local/SmolLM2-135M-Instruct"
        label = orjson.loads(body["choices"][0]["message"]["content"])["label"]
        assert label in {"positive", "negative", "neutral"}
        assert body["usage"]["prompt_tokens"] > 10 and body["usage"]["completion_tokens"] > 0


def test_invalid_file_fails_validation_with_line_errors(make_client, tmp_path: Path) -> None:
    client = make_client()
    good = embedding_lines(["one", "two"])
    duplicate = dict(good[0])
    wrong_url = {**good[1], "custom_id": "x", "url": "/v1/chat/completions"}
    other_model = {**good[1], "custom_id": "y", "body": {"model": "text-embedding-3-large", "input": "z"}}
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in [*good, duplicate, wrong_url, other_model])
                     + b"{not json\n")
    batch = wait_terminal(client, submit(client, path, "/v1/embeddings").id)
    assert batch.status == "failed" and batch.failed_at
    codes = {(error.code, error.line) for error in batch.errors.data}
    assert ("duplicate_custom_id", 3) in codes
    assert ("invalid_url", 4) in codes
    assert ("mismatched_model", 5) in codes
    assert ("invalid_json_line", 6) in codes
    assert batch.output_file_id is None and batch.error_file_id is None


def test_per_item_failures_go_to_the_error_file(make_client, tmp_path: Path) -> None:
    client = make_client(faults=_faults(item_failure_rate=0.5, seed=3))
    texts = [f"review number {i} about a film" for i in range(12)]
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(texts)),
                                         "/v1/embeddings").id)
    assert batch.status == "completed"
    ok, failed = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert len(ok) + len(failed) == 12 and failed and ok
    assert batch.request_counts.completed == len(ok) and batch.request_counts.failed == len(failed)
    for line in failed:
        assert line["error"] is None and line["response"]["status_code"] in (400, 429, 500)
        assert line["response"]["body"]["error"]["code"] == "injected_failure"
    # Same seed and same file: the same items fail again.
    again = wait_terminal(client, submit(client, tmp_path / "in.jsonl", "/v1/embeddings").id)
    assert {x["custom_id"] for x in read_lines(client, again.error_file_id)} == {x["custom_id"] for x in failed}


def test_all_failed_batch_completes_without_output_file(make_client, tmp_path: Path) -> None:
    client = make_client(faults=_faults(item_failure_rate=1.0, item_failure_status_codes=(400,)))
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(["a", "b"])),
                                         "/v1/embeddings").id)
    assert batch.status == "completed" and batch.output_file_id is None
    assert [line["response"]["status_code"] for line in read_lines(client, batch.error_file_id)] == [400, 400]


def test_cancel_keeps_finished_results(make_client, tmp_path: Path) -> None:
    client = make_client(faults=_faults(item_delay_seconds=0.1))
    texts = [f"text {i}" for i in range(40)]
    batch = submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(texts)), "/v1/embeddings")
    deadline = time.monotonic() + 120
    while client.batches.retrieve(batch.id).request_counts.completed < 3:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = wait_terminal(client, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at
    done, rest = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert len(done) >= 1 and len(done) + len(rest) == 40 and rest
    assert {line["error"]["code"] for line in rest} == {"batch_cancelled"}
    assert all(line["response"] is None for line in rest)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_expiry_keeps_finished_results(make_client, tmp_path: Path) -> None:
    client = make_client(faults=_faults(expire_after_items=3))
    prompts = [f"Say hello number {i}" for i in range(6)]
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", chat_lines(prompts, max_tokens=4)),
                                         "/v1/chat/completions").id)
    assert batch.status == "expired" and batch.expired_at
    done, rest = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert len(done) == 3 and len(rest) == 3
    assert {line["error"]["code"] for line in rest} == {"batch_expired"}
    assert batch.request_counts.completed == 3 and batch.request_counts.failed == 3


def test_completion_window_expires_a_slow_batch(make_client, tmp_path: Path) -> None:
    client = make_client(completion_window_seconds=1, faults=_faults(item_delay_seconds=0.2))
    texts = [f"text {i}" for i in range(20)]  # 4 s of work in a 1 s window
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(texts)),
                                         "/v1/embeddings").id)
    assert batch.status == "expired"
    rest = read_lines(client, batch.error_file_id)
    assert rest and {line["error"]["code"] for line in rest} == {"batch_expired"}
    assert len(read_lines(client, batch.output_file_id)) + len(rest) == 20


def test_list_pages_newest_first(make_client, tmp_path: Path) -> None:
    client = make_client()
    path = write_jsonl(tmp_path / "in.jsonl", embedding_lines(["only"]))
    created = [submit(client, path, "/v1/embeddings").id for _ in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == created[::-1]  # auto-pagination over `after`
    for batch_id in created:
        assert wait_terminal(client, batch_id).status == "completed"


def test_files_get_delete_and_unknown_ids(make_client, tmp_path: Path) -> None:
    client = make_client()
    uploaded = client.files.create(file=write_jsonl(tmp_path / "f.jsonl", embedding_lines(["x"])).open("rb"),
                                   purpose="batch")
    assert uploaded.id.startswith("file-") and client.files.retrieve(uploaded.id).filename == "f.jsonl"
    assert client.files.content(uploaded.id).content == (tmp_path / "f.jsonl").read_bytes()
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/embeddings", completion_window="24h")


def test_synchronous_endpoints(make_client) -> None:
    client = make_client()
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["a fine film", "tax law"],
                                        dimensions=64)
    assert [len(item.embedding) for item in embedded.data] == [64, 64]
    assert embedded.model == "local/all-MiniLM-L6-v2" and embedded.usage.prompt_tokens > 0
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=1000)
    chat = client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                                          messages=[{"role": "user", "content": "Tell me a long story."}])
    assert chat.model == "local/SmolLM2-135M-Instruct" and chat.usage.completion_tokens <= 5
    assert chat.choices[0].finish_reason == "length"


def test_token_is_required_when_set(make_http_client) -> None:
    client = make_http_client(token="s3cret", client_token="wrong")
    with pytest.raises(openai.AuthenticationError):
        client.batches.list()
    assert make_http_client(token="s3cret").batches.list().data == []


def test_api_errors_are_retried_by_the_sdk(make_client) -> None:
    client = make_client(faults=_faults(api_error_first_n=2, api_error_status=429), max_retries=3)
    assert client.batches.list().data == []
    failing = make_client(faults=_faults(api_error_first_n=1, api_error_status=500), max_retries=0)
    with pytest.raises(openai.InternalServerError):
        failing.batches.list()


def _faults(**changes: object):
    from batch_assets.local.config import FaultConfig

    return FaultConfig(**changes)  # type: ignore[arg-type]


def test_over_limit_file_fails_validation(make_client, tmp_path: Path) -> None:
    client = make_client()
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": "text-embedding-3-small", "input": "x"}} for i in range(50_001)]
    batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", lines), "/v1/embeddings").id)
    assert batch.status == "failed"
    # 50,001 one-input requests break both the request and the embedding-input limit
    assert {error.code for error in batch.errors.data} == {"too_many_requests", "too_many_embedding_inputs"}
    assert batch.request_counts.completed == 0  # nothing ran: nothing billed

"""BatchClient against a mock HTTP transport: the exact requests the official SDK sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx2
import openai
import pytest

from batch_assets.batching.client import (
    MISSING_KEY_MESSAGE,
    BatchClient,
    MissingApiKeyError,
    openai_client_from_env,
    validate_metadata,
)

Handler = Callable[[httpx2.Request], httpx2.Response]


def batch_json(batch_id: str = "batch_1", *, status: str = "validating", metadata: dict | None = None,
               created_at: int = 1_700_000_000) -> dict:
    return {
        "id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "file-in",
        "completion_window": "24h", "status": status, "created_at": created_at, "metadata": metadata,
    }


def file_json(file_id: str = "file-1", filename: str = "requests.jsonl", size: int = 10) -> dict:
    return {"id": file_id, "object": "file", "bytes": size, "created_at": 1_700_000_000,
            "filename": filename, "purpose": "batch", "status": "processed"}


class Recorder:
    """A MockTransport handler that records every request (body read) and answers from a script."""

    def __init__(self, respond: Handler) -> None:
        self.requests: list[httpx2.Request] = []
        self.bodies: list[bytes] = []
        self._respond = respond

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(request.read())
        self.requests.append(request)
        return self._respond(request)


def multipart_parts(request: httpx2.Request, body: bytes) -> dict[str, tuple[bytes, bytes]]:
    """Form field name -> (part headers, part body) of a multipart/form-data request."""
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    fields = {}
    for part in body.split(b"--" + boundary)[1:-1]:  # before the first and after the last: nothing
        head, _, value = part[2:-2].partition(b"\r\n\r\n")  # each part is framed by CRLFs
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        fields[name] = (head, value)
    return fields


def make_client(respond: Handler, *, max_retries: int = 0) -> tuple[BatchClient, Recorder]:
    recorder = Recorder(respond)
    sdk = openai.OpenAI(
        api_key="test",
        base_url="http://testserver/v1",
        max_retries=max_retries,
        http_client=httpx2.Client(transport=httpx2.MockTransport(recorder)),
    )
    return BatchClient(sdk), recorder


def test_upload_sends_multipart_with_purpose_batch_and_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    content = b'{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}}\n'
    path.write_bytes(content)
    client, rec = make_client(lambda r: httpx2.Response(200, json=file_json(size=len(content))))

    uploaded = client.upload(path)

    assert uploaded.id == "file-1"
    (request,) = rec.requests
    assert request.method == "POST"
    assert request.url.path == "/v1/files"
    assert request.headers["authorization"] == "Bearer test"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    by_name = multipart_parts(request, rec.bodies[0])
    assert by_name["purpose"][1] == b"batch"
    assert b'filename="requests.jsonl"' in by_name["file"][0]
    assert by_name["file"][1] == content


def test_create_sends_exact_body() -> None:
    client, rec = make_client(lambda r: httpx2.Response(200, json=batch_json(metadata={"k": "v"})))

    batch = client.create("file-in", "/v1/chat/completions", metadata={"idempotency_key": "abc"})

    assert batch.id == "batch_1" and batch.status == "validating"
    (request,) = rec.requests
    assert (request.method, request.url.path) == ("POST", "/v1/batches")
    assert json.loads(rec.bodies[0]) == {
        "input_file_id": "file-in", "endpoint": "/v1/chat/completions", "completion_window": "24h",
        "metadata": {"idempotency_key": "abc"},
    }


def test_create_without_metadata_omits_it() -> None:
    client, rec = make_client(lambda r: httpx2.Response(200, json=batch_json()))
    client.create("file-in", "/v1/embeddings")
    assert json.loads(rec.bodies[0]) == {
        "input_file_id": "file-in", "endpoint": "/v1/embeddings", "completion_window": "24h",
    }


@pytest.mark.parametrize(
    ("metadata", "needle"),
    [
        ({f"k{i}": "v" for i in range(17)}, "17 pairs"),
        ({"k" * 65: "v"}, "65 characters"),
        ({"k": "v" * 513}, "513 characters"),
        ({"k": 5}, "must be a str"),
        ({5: "v"}, "must be a str"),
    ],
)
def test_invalid_metadata_raises_before_any_request(metadata: dict, needle: str) -> None:
    client, rec = make_client(lambda r: httpx2.Response(200, json=batch_json()))
    with pytest.raises(ValueError, match=needle):
        client.create("file-in", "/v1/embeddings", metadata=metadata)
    assert rec.requests == []


def test_metadata_at_the_limits_is_accepted() -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert validate_metadata(metadata) == metadata
    assert validate_metadata(None) is None


def test_retrieve_and_cancel_hit_their_paths() -> None:
    def respond(request: httpx2.Request) -> httpx2.Response:
        status = "cancelling" if request.url.path.endswith("/cancel") else "in_progress"
        return httpx2.Response(200, json=batch_json("batch_9", status=status))

    client, rec = make_client(respond)
    assert client.retrieve("batch_9").status == "in_progress"
    assert client.cancel("batch_9").status == "cancelling"
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("GET", "/v1/batches/batch_9"), ("POST", "/v1/batches/batch_9/cancel"),
    ]


def _paged_batches(request: httpx2.Request) -> httpx2.Response:
    pages = {
        None: ([batch_json("b1", metadata={"key": "x"}, created_at=300),
                batch_json("b2", metadata={"key": "y"}, created_at=200)], True),
        "b2": ([batch_json("b3", metadata=None, created_at=100),
                batch_json("b4", metadata={"key": "y"}, created_at=50)], False),
    }
    data, has_more = pages[request.url.params.get("after")]
    return httpx2.Response(200, json={"object": "list", "data": data, "has_more": has_more})


def test_list_pages_through_all_batches_with_after() -> None:
    client, rec = make_client(_paged_batches)

    assert [b.id for b in client.list(limit=2)] == ["b1", "b2", "b3", "b4"]

    assert [dict(r.url.params) for r in rec.requests] == [{"limit": "2"}, {"limit": "2", "after": "b2"}]
    assert all(r.url.path == "/v1/batches" for r in rec.requests)


def test_list_starts_after_a_cursor() -> None:
    client, rec = make_client(_paged_batches)
    assert [b.id for b in client.list(after="b2")] == ["b3", "b4"]
    assert dict(rec.requests[0].url.params) == {"limit": "100", "after": "b2"}


def test_find_batches_by_metadata_filters_all_pages() -> None:
    client, _ = make_client(_paged_batches)
    assert [b.id for b in client.find_batches_by_metadata("key", "y")] == ["b2", "b4"]
    assert client.find_batches_by_metadata("key", "nope") == []


def test_find_batches_by_metadata_stops_at_created_after() -> None:
    client, rec = make_client(_paged_batches)
    assert [b.id for b in client.find_batches_by_metadata("key", "y", created_after=150)] == ["b2"]
    assert len(rec.requests) == 2  # the second page holds the first batch older than the cut-off


def test_download_streams_exact_bytes_atomically(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 20_000 + "é✓\n".encode()  # ~5 MB, several chunks, not UTF-8 clean

    def respond(request: httpx2.Request) -> httpx2.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/files/file-out/content")
        chunks = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
        return httpx2.Response(200, content=chunks)

    client, _ = make_client(respond)
    dest = tmp_path / "nested" / "output.jsonl"

    written = client.download("file-out", dest)

    assert written == len(payload)
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["output.jsonl"]


def test_failed_download_leaves_no_partial_file(tmp_path: Path) -> None:
    client, _ = make_client(
        lambda r: httpx2.Response(404, json={"error": {"message": "No such file", "type": "invalid_request"}})
    )
    dest = tmp_path / "output.jsonl"
    dest.write_bytes(b"previous")
    with pytest.raises(openai.NotFoundError):
        client.download("file-gone", dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


def _fail_first(status: int, then: Handler) -> Handler:
    calls = {"n": 0}

    def respond(request: httpx2.Request) -> httpx2.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            # retry-after-ms keeps the SDK's backoff to a millisecond in tests
            return httpx2.Response(status, headers={"retry-after-ms": "1"},
                                   json={"error": {"message": "slow down", "type": "rate_limit"}})
        return then(request)

    return respond


def test_429_then_200_is_retried_by_the_sdk() -> None:
    client, rec = make_client(_fail_first(429, lambda r: httpx2.Response(200, json=batch_json())),
                              max_retries=2)
    assert client.retrieve("batch_1").id == "batch_1"
    assert len(rec.requests) == 2


def test_upload_retry_resends_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"x" * 100_000)
    ok = lambda r: httpx2.Response(200, json=file_json())  # noqa: E731
    client, rec = make_client(_fail_first(503, ok), max_retries=1)
    client.upload(path)
    assert len(rec.requests) == 2
    for request, body in zip(rec.requests, rec.bodies, strict=True):
        assert multipart_parts(request, body)["file"][1] == b"x" * 100_000


def test_download_5xx_then_200_is_retried(tmp_path: Path) -> None:
    ok = lambda r: httpx2.Response(200, content=b"ok\n")  # noqa: E731
    client, rec = make_client(_fail_first(500, ok), max_retries=1)
    assert client.download("file-out", tmp_path / "o.jsonl") == 3
    assert len(rec.requests) == 2


def test_429_is_raised_when_retries_are_exhausted() -> None:
    client, rec = make_client(lambda r: httpx2.Response(429, headers={"retry-after-ms": "1"}, json={}),
                              max_retries=1)
    with pytest.raises(openai.RateLimitError):
        client.retrieve("batch_1")
    assert len(rec.requests) == 2


def test_delete_file() -> None:
    client, rec = make_client(lambda r: httpx2.Response(200, json={"id": "file-1", "object": "file",
                                                                   "deleted": True}))
    assert client.delete_file("file-1") is None
    assert [(r.method, r.url.path) for r in rec.requests] == [("DELETE", "/v1/files/file-1")]


def test_openai_property_is_the_sdk_client() -> None:
    sdk = openai.OpenAI(api_key="test", base_url="http://testserver/v1")
    assert BatchClient(sdk).openai is sdk


def test_client_from_env_reads_key_and_base_url() -> None:
    sdk = openai_client_from_env({"OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://gateway:8000/v1"},
                                 max_retries=7)
    assert sdk.api_key == "sk-secret"
    assert str(sdk.base_url).rstrip("/") == "http://gateway:8000/v1"
    assert sdk.max_retries == 7


def test_client_from_env_defaults_to_openai() -> None:
    sdk = openai_client_from_env({"OPENAI_API_KEY": "sk-secret"})
    assert str(sdk.base_url).rstrip("/") == "https://api.openai.com/v1"


@pytest.mark.parametrize("env", [{}, {"OPENAI_API_KEY": ""}, {"OPENAI_API_KEY": "  "}])
def test_missing_key_says_what_to_do(env: dict) -> None:
    with pytest.raises(MissingApiKeyError) as excinfo:
        openai_client_from_env(env)
    assert str(excinfo.value) == MISSING_KEY_MESSAGE
    assert "BATCH_ASSETS_PROVIDER=local" in str(excinfo.value)


def test_client_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert openai_client_from_env().api_key == "sk-from-env"
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(MissingApiKeyError):
        openai_client_from_env()

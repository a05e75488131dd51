"""The Files API as OpenAI's: purposes, pagination, expiry, the JSONL check, size limits while
streaming, the token before the body, malformed uploads leaving nothing behind.

These need no model: they run in process and over HTTP (uvicorn) with the official SDK, and with a
raw httpx client where a test must control exactly what is sent and count what was read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest

from batch_assets.local import files_api
from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.config import EngineConfig
from batch_assets.local.transport import LocalTransport
from batch_assets_tests.local.helpers import LocalServer, embedding_lines, write_jsonl
from batch_assets_tests.local.openapi_schemas import assert_conforms

DAY = 24 * 3600


def _upload(client: openai.OpenAI, path: Path, purpose: str = "batch", **kwargs: object):  # noqa: ANN202
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose=purpose, **kwargs)  # type: ignore[arg-type]


def _state_files(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / "files").iterdir())


def test_purposes_and_expiry_are_openais(make_client, tmp_path: Path) -> None:
    client = make_client()
    batch_file = write_jsonl(tmp_path / "in.jsonl", embedding_lines(["a"]))
    stored = _upload(client, batch_file)
    assert_conforms("OpenAIFile", stored.model_dump())
    assert stored.purpose == "batch" and stored.expires_at == stored.created_at + 30 * DAY
    notes = tmp_path / "notes.txt"
    notes.write_text("anything")
    for purpose in ("assistants", "fine-tune", "vision", "user_data", "evals"):
        assert _upload(client, notes, purpose).purpose == purpose
    assert _upload(client, notes, "user_data").expires_at is None  # only batch files expire by default
    kept = _upload(client, notes, "user_data", expires_after={"anchor": "created_at", "seconds": 3600})
    assert kept.expires_at == kept.created_at + 3600
    with pytest.raises(openai.BadRequestError) as refused:
        _upload(client, notes, "answers")  # type: ignore[arg-type]
    assert refused.value.code == "invalid_value" and refused.value.param == "purpose"
    assert "Supported values are: 'assistants', 'batch', 'fine-tune', 'vision', 'user_data', and 'evals'." in \
        refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        _upload(client, notes, "user_data", expires_after={"anchor": "created_at", "seconds": 60})
    assert refused.value.code == "integer_below_min_value" and refused.value.param == "expires_after.seconds"


def test_a_batch_upload_must_be_jsonl(make_client, tmp_path: Path) -> None:
    client = make_client()
    notes = tmp_path / "requests.csv"
    notes.write_text("id,text\n1,hello\n")
    with pytest.raises(openai.BadRequestError, match=r"Invalid file format for Batch API\. Must be \.jsonl"):
        _upload(client, notes)
    # Like OpenAI, bad lines in a .jsonl file are the batch's validation's business, not the upload's.
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text('{"custom_id": "a"}\nnot json\n')
    accepted = _upload(client, bad_lines)
    assert accepted.bytes == bad_lines.stat().st_size
    assert _state_files(tmp_path / "local_api") == [accepted.id]  # the refused upload left nothing


def test_list_pages_like_openai(make_client, tmp_path: Path) -> None:
    client = make_client()
    path = write_jsonl(tmp_path / "in.jsonl", embedding_lines(["a"]))
    ids = [_upload(client, path).id for _ in range(5)]
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    other = _upload(client, notes, "user_data").id

    page = client.files.list(limit=2, purpose="batch")
    assert_conforms("ListFilesResponse", page.model_dump())
    assert [f.id for f in page.data] == ids[::-1][:2] and page.has_more
    assert page.first_id == ids[4] and page.last_id == ids[3]  # type: ignore[attr-defined]
    assert [f.id for f in client.files.list(limit=2, purpose="batch")] == ids[::-1]  # the SDK follows `after`
    assert [f.id for f in client.files.list(order="asc", limit=3)] == [*ids, other]
    last = client.files.list(order="asc", after=ids[3])
    assert [f.id for f in last.data] == [ids[4], other] and not last.has_more
    empty = client.files.list(purpose="fine-tune")
    assert empty.data == [] and empty.first_id is None and not empty.has_more  # type: ignore[attr-defined]
    client.files.delete(ids[0])
    assert ids[0] not in [f.id for f in client.files.list()]
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.list(limit=0)
    assert refused.value.code == "integer_below_min_value"
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.list(order="newest")  # type: ignore[arg-type]
    assert refused.value.code == "invalid_value" and refused.value.param == "order"


def test_expired_files_are_gone(make_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    stored = _upload(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(["a"])))
    later = time.time() + 31 * DAY
    monkeypatch.setattr("batch_assets.local.store.time.time", lambda: later)
    with pytest.raises(openai.NotFoundError, match=f"No such File object: {stored.id}"):
        client.files.retrieve(stored.id)
    assert client.files.list().data == []
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    files_dir = tmp_path / "local_api" / "files"
    (files_dir / "file-killed.part").write_bytes(b"half an upload from a killed process")
    _upload(client, notes, "user_data")  # an upload purges expired content and day-old partial uploads
    assert stored.id not in _state_files(tmp_path / "local_api")
    assert "file-killed.part" not in _state_files(tmp_path / "local_api")


# -- size limits while streaming ---------------------------------------------------------------------
def _multipart(purpose_first: bool, file_bytes: Iterator[bytes], boundary: str = "b0und4ry") -> Iterator[bytes]:
    purpose = f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode()
    if purpose_first:
        yield purpose
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
           "Content-Type: application/jsonl\r\n\r\n").encode()
    yield from file_bytes
    yield b"\r\n"
    if not purpose_first:
        yield purpose
    yield f"--{boundary}--\r\n".encode()


class Counted:
    """A lazy body of `total` bytes that counts how much of it was ever pulled."""

    def __init__(self, total: int, chunk: int = 1 << 16) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    def __iter__(self) -> Iterator[bytes]:
        line = b'{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}\n'
        block = (line * (self.chunk // len(line) + 1))[: self.chunk]
        while self.pulled < self.total:
            piece = block[: self.total - self.pulled]
            self.pulled += len(piece)
            yield piece


def _post_upload(client: httpx2.Client, body: Iterator[bytes], token: str | None = None) -> httpx2.Response:
    headers = {"content-type": "multipart/form-data; boundary=b0und4ry"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return client.post("/v1/files", content=body, headers=headers)


@pytest.fixture
def raw_clients(tmp_path: Path) -> Iterator[dict[str, tuple[httpx2.Client, Path]]]:
    """Raw httpx clients with token "s3cret", in process and over HTTP, each on its own state folder."""
    clients: dict[str, tuple[httpx2.Client, Path]] = {}
    in_process = EngineConfig(state_dir=tmp_path / "in_process", model_backend="fake")
    clients["in_process"] = (httpx2.Client(transport=LocalTransport(LocalBatchAPI(in_process, token="s3cret")),
                                           base_url="http://local"), in_process.state_dir)
    over_http = EngineConfig(state_dir=tmp_path / "http", model_backend="fake")
    server = LocalServer(LocalBatchAPI(over_http, token="s3cret"))
    clients["http"] = (httpx2.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60), over_http.state_dir)
    yield clients
    for client, _ in clients.values():
        client.close()
    server.stop()


@pytest.mark.parametrize("mode", ["in_process", "http"])
def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(raw_clients, mode: str) -> None:
    client, state_dir = raw_clients[mode]
    body = Counted(300_000_000)  # 300 MB, generated lazily
    started = time.monotonic()
    response = _post_upload(client, _multipart(True, iter(body)))
    assert response.status_code == 401 and response.json()["error"]["message"].startswith(
        "You didn't provide an API key.")
    assert body.pulled < 20_000_000, f"{body.pulled} bytes were sent before the 401"  # socket buffers at most
    assert time.monotonic() - started < 30
    assert _state_files(state_dir) == []
    if mode == "http":  # the refused rest is not drained: the connection closes; others are kept alive
        assert response.headers["connection"] == "close"
        assert "close" not in client.get("/v1/files", headers={"authorization": "Bearer s3cret"}).headers.get(
            "connection", "")
    wrong = _post_upload(client, _multipart(True, iter(Counted(1000))), token="wrong-token-123")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert "wrong-token-123" not in wrong.text  # the key is masked, as OpenAI masks it


@pytest.mark.parametrize("mode", ["in_process", "http"])
@pytest.mark.parametrize("purpose_first", [True, False])
def test_an_upload_over_the_limit_stops_being_read_and_leaves_nothing(
    raw_clients, monkeypatch: pytest.MonkeyPatch, mode: str, purpose_first: bool
) -> None:
    # The real limits are 200 MB for batch files and 512 MB for others; scaled down so the test is quick.
    monkeypatch.setattr(files_api, "MAX_BATCH_UPLOAD_BYTES", 1_000_000)
    monkeypatch.setattr(files_api, "MAX_UPLOAD_BYTES", 3_000_000)
    client, state_dir = raw_clients[mode]
    body = Counted(50_000_000)
    response = _post_upload(client, _multipart(purpose_first, iter(body)), token="s3cret")
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "file_too_large"
    # with the purpose first the batch limit (1 MB) stops the read; without it the general one (3 MB) does
    assert body.pulled < (12_000_000 if purpose_first else 14_000_000)
    assert _state_files(state_dir) == []
    small = _post_upload(client, _multipart(purpose_first, iter(Counted(900_000))), token="s3cret")
    assert small.status_code == 200 and small.json()["bytes"] == 900_000
    too_big_after = _post_upload(client, _multipart(False, iter(Counted(2_000_000))), token="s3cret")
    assert too_big_after.status_code == 413  # over the batch limit, found out once the purpose arrived
    assert _state_files(state_dir) == [small.json()["id"]]


@pytest.mark.parametrize("mode", ["in_process", "http"])
@pytest.mark.parametrize(("body", "needle"), [
    (b"--b0und4ry\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n\r\n{}\r\n",
     "ends before its closing boundary"),
    (b"--b0und4ry\r\nno headers here\r\n\r\nxx", "malformed"),
    (b"not multipart at all", "malformed"),
    (b"--b0und4ry\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b0und4ry--\r\n",
     "Missing required parameter: 'file'."),
])
def test_a_malformed_upload_is_a_400_and_leaves_nothing(raw_clients, mode: str, body: bytes, needle: str) -> None:
    client, state_dir = raw_clients[mode]
    response = _post_upload(client, iter([body]), token="s3cret")
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]
    assert _state_files(state_dir) == []


def test_a_non_multipart_upload_is_a_400(raw_clients) -> None:
    client, state_dir = raw_clients["in_process"]
    response = client.post("/v1/files", json={"purpose": "batch"}, headers={"authorization": "Bearer s3cret"})
    assert response.status_code == 400 and "multipart/form-data" in response.json()["error"]["message"]
    assert _state_files(state_dir) == []

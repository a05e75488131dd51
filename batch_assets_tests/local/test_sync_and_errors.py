"""The synchronous endpoints through the official SDK (streaming included), and OpenAI's error bodies.

Fake models, in process and over HTTP: these check the protocol; test_conformance.py runs the
real models.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest

from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.config import EngineConfig
from batch_assets.local.transport import LocalTransport
from batch_assets_tests.local.helpers import chat_lines, submit, write_jsonl
from batch_assets_tests.local.openapi_schemas import assert_conforms

MESSAGES = [{"role": "user", "content": "Say hello to the batch engine"}]


def test_chat_streams_through_the_sdk(make_client) -> None:
    client = make_client(model_backend="fake")
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,  # type: ignore[arg-type]
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == whole.usage.total_tokens  # type: ignore[union-attr]
    plain = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(chunk.usage is None for chunk in plain)
    with pytest.raises(openai.BadRequestError, match="only allowed when 'stream' is enabled"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,  # type: ignore[arg-type]
                                       stream_options={"include_usage": True})
    with pytest.raises(openai.BadRequestError) as refused:  # errors come as JSON, before any stream
        client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True)
    assert refused.value.code == "empty_array"


def test_responses_and_completions_through_the_sdk(make_client) -> None:
    client = make_client(model_backend="fake")
    response = client.responses.create(model="gpt-4o-mini", instructions="Be brief.", input="Hello there",
                                       max_output_tokens=16)
    assert response.status == "completed" and response.output_text.startswith("Echo: Hello there")
    assert response.usage is not None and response.usage.input_tokens > 0
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert completion.object == "text_completion" and completion.choices[0].text.startswith("Echo:")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o-mini", input="Hello", stream=True)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "stream"


@pytest.fixture
def raw(tmp_path: Path) -> httpx2.Client:
    api = LocalBatchAPI(EngineConfig(state_dir=tmp_path / "state", model_backend="fake"))
    return httpx2.Client(transport=LocalTransport(api), base_url="http://local")


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/v1/nothing", 404, "Invalid URL (GET /v1/nothing)"),
    ("GET", "/v1/chat/completions", 405, "Invalid method for URL (GET /v1/chat/completions)"),
    ("GET", "/v1/files/file-abc", 404, "No such File object: file-abc"),
    ("GET", "/v1/batches/batch_abc", 404, "No batch found with id 'batch_abc'."),
    ("GET", "/v1/batches/abc", 400, "Invalid 'batch_id': 'abc'. Expected an ID that begins with 'batch'."),
    ("POST", "/v1/batches", 400, "We could not parse the JSON body of your request."),
])
def test_error_bodies_are_openais(raw: httpx2.Client, method: str, path: str, status: int, message: str) -> None:
    response = raw.request(method, path, content=b"{not json" if method == "POST" else None)
    assert response.status_code == status
    body = response.json()
    assert_conforms("ErrorResponse", body)
    assert body["error"]["message"].startswith(message) and body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param", "code", "message"), [
    ({"input_file_id": openai.NOT_GIVEN, "endpoint": "/v1/embeddings", "completion_window": "24h"}, "input_file_id",
     "missing_required_parameter",
     "Missing required parameter: 'input_file_id'."),
    ({"input_file_id": "file-x", "endpoint": "/v1/images", "completion_window": "24h"}, "endpoint", "invalid_value",
     "Invalid value: '/v1/images'. Supported values are: '/v1/embeddings', '/v1/chat/completions', "
     "'/v1/responses', and '/v1/completions'."),
    ({"input_file_id": "file-x", "endpoint": "/v1/embeddings", "completion_window": "1h"}, "completion_window",
     "invalid_value", "Invalid value: '1h'. Supported values are: '24h'."),
    ({"input_file_id": "wrong-id", "endpoint": "/v1/embeddings", "completion_window": "24h"}, "input_file_id",
     "invalid_value", "Invalid 'input_file_id': 'wrong-id'. Expected an ID that begins with 'file'."),
    ({"input_file_id": "file-x", "endpoint": "/v1/embeddings", "completion_window": "24h",
      "output_expires_after": {"anchor": "created_at", "seconds": 10}}, "output_expires_after.seconds",
     "integer_below_min_value", None),
])
def test_batch_create_refusals_carry_openais_codes(make_client, body: dict, param: str, code: str,
                                                   message: str | None) -> None:
    client = make_client(model_backend="fake")
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(**body)
    assert (refused.value.param, refused.value.code) == (param, code)
    if message is not None:
        assert refused.value.message.endswith(message)


def test_moderations_batches_say_where_to_go(make_client) -> None:
    client = make_client(model_backend="fake")
    with pytest.raises(openai.BadRequestError, match="no model for /v1/moderations; send that batch to OpenAI"):
        client.batches.create(input_file_id="file-x", endpoint="/v1/moderations", completion_window="24h")


def test_output_expires_after_sets_the_result_files_expiry(make_client, tmp_path: Path) -> None:
    from batch_assets_tests.local.helpers import wait_terminal

    client = make_client(model_backend="fake")
    batch = submit(client, write_jsonl(tmp_path / "in.jsonl", chat_lines(["hi"], max_tokens=4)),
                   "/v1/chat/completions", output_expires_after={"anchor": "created_at", "seconds": 7200})
    batch = wait_terminal(client, batch.id)
    output = client.files.retrieve(batch.output_file_id)  # type: ignore[arg-type]
    assert output.purpose == "batch_output" and output.expires_at == output.created_at + 7200


def test_an_unexpected_failure_is_an_openai_shaped_500(make_client, monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client(model_backend="fake", max_retries=0)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("batch_assets.local.store.StateStore.list_batch_rows", broken)
    with pytest.raises(openai.InternalServerError) as failed:
        client.batches.list()
    assert_conforms("ErrorResponse", {"error": failed.value.body})  # the SDK keeps the inner object
    assert "No space left on device" in failed.value.message and failed.value.type == "server_error"

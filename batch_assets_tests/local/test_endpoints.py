"""answer_one for the Responses API and legacy completions, and chat streaming, on the fake models.

Every answer is checked against OpenAI's published schema for its endpoint; the real model runs
the same paths in test_conformance.py.
"""

from __future__ import annotations

import orjson
import pytest

from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, COMPLETIONS_URL, EMBEDDINGS_URL, RESPONSES_URL
from batch_assets.local.endpoints import chat_completion_chunks, stream_options
from batch_assets.local.errors import InvalidRequest
from batch_assets.local.execute import answer_one, answer_usage, embed_many
from batch_assets.local.model_api import FAKE_CHAT_MODEL_NAME
from batch_assets.local.models import LocalModels
from batch_assets_tests.local.openapi_schemas import assert_conforms, schema_errors

LABEL_FORMAT = {"type": "json_schema", "name": "sentiment", "strict": True,
                "schema": {"type": "object", "additionalProperties": False, "required": ["label"],
                           "properties": {"label": {"type": "string", "enum": ["positive", "negative"]}}}}


@pytest.fixture(scope="module")
def models() -> LocalModels:
    return LocalModels("fake")


def test_a_response_holds_the_answer_where_openai_puts_it(models: LocalModels) -> None:
    status, response = answer_one(models, RESPONSES_URL, {
        "model": "gpt-4o-mini", "instructions": "Classify.", "input": "A warm, funny film.",
        "max_output_tokens": 16, "temperature": 0, "text": {"format": LABEL_FORMAT}, "metadata": {"k": "v"}})
    assert status == 200
    assert_conforms("Response", response)
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["model"] == FAKE_CHAT_MODEL_NAME
    (message,) = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    (part,) = message["content"]
    assert part["type"] == "output_text"
    assert orjson.loads(part["text"])["label"] in ("positive", "negative")  # text.format was applied
    usage = response["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    assert response["instructions"] == "Classify." and response["metadata"] == {"k": "v"}
    assert response["text"]["format"] == LABEL_FORMAT


def test_messages_input_runs_like_the_chat_conversation(models: LocalModels) -> None:
    conversation = [{"role": "developer", "content": "Be brief."},
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello there"}]}]
    _, response = answer_one(models, RESPONSES_URL, {"model": "m", "input": conversation})
    _, chat = answer_one(models, CHAT_COMPLETIONS_URL, {"model": "m", "messages": [
        {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]})
    assert response["output"][0]["content"][0]["text"] == chat["choices"][0]["message"]["content"]
    assert response["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"]


def test_a_response_cut_by_max_output_tokens_is_incomplete(models: LocalModels) -> None:
    long_input = " ".join(f"word{i}" for i in range(40))
    _, response = answer_one(models, RESPONSES_URL, {"model": "m", "input": long_input, "max_output_tokens": 16})
    assert_conforms("Response", response)
    assert response["status"] == "incomplete" and response["completed_at"] is None
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete" and response["usage"]["output_tokens"] == 16


@pytest.mark.parametrize(("body", "param", "code", "message"), [
    ({"input": "x"}, "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ({"model": "m"}, "input", "missing_required_parameter", "Missing required parameter: 'input'."),
    ({"model": "m", "input": "x", "max_output_tokens": 8}, "max_output_tokens", "integer_below_min_value",
     "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead."),
    ({"model": "m", "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value",
     "Invalid value: 'robot'. Supported values are: 'user', 'assistant', 'system', and 'developer'."),
    ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "invalid_type",
     "Invalid type for 'temperature': expected a decimal, but got a string instead."),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "schema": {}}}},
     "text.format.name", "missing_required_parameter", "Missing required parameter: 'text.format.name'."),
    ({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}, "tools", "unsupported_parameter", None),
    ({"model": "m", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id",
     "unsupported_parameter", None),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
     "input[0].content[0].type", "unsupported_parameter", None),
])
def test_responses_refusals_carry_openais_codes(models: LocalModels, body: dict, param: str, code: str,
                                                message: str | None) -> None:
    status, answer = answer_one(models, RESPONSES_URL, body)
    assert status == 400
    assert_conforms("ErrorResponse", answer)
    error = answer["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    if message is not None:
        assert error["message"] == message


def test_completions_answer_a_prompt_as_text_completion(models: LocalModels) -> None:
    status, answer = answer_one(models, COMPLETIONS_URL, {"model": "gpt-3.5-turbo-instruct",
                                                          "prompt": "Say this is a test", "stop": [" test"]})
    assert status == 200
    assert_conforms("CreateCompletionResponse", answer)
    (choice,) = answer["choices"]
    assert choice["text"] == "Echo: Say this is a" and choice["finish_reason"] == "stop"  # cut at the stop sequence
    long_prompt = " ".join(f"w{i}" for i in range(40))
    _, answer = answer_one(models, COMPLETIONS_URL, {"model": "m", "prompt": [long_prompt]})
    # OpenAI's default max_tokens for completions is 16
    assert answer["usage"]["completion_tokens"] == 16 and answer["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("body", [{"model": "m", "prompt": "x", "echo": True},
                                  {"model": "m", "prompt": ["a", "b"]},
                                  {"model": "m", "prompt": [1, 2, 3]},
                                  {"model": "m", "prompt": "x", "n": 2}])
def test_completions_refuse_what_the_local_engine_cannot_do(models: LocalModels, body: dict) -> None:
    status, answer = answer_one(models, COMPLETIONS_URL, body)
    assert status == 400 and answer["error"]["code"] == "unsupported_parameter"
    assert "local engine" in answer["error"]["message"]


def test_embeddings_do_not_go_through_answer_one(models: LocalModels) -> None:
    with pytest.raises(ValueError, match="embed_many"):
        answer_one(models, EMBEDDINGS_URL, {"model": "m", "input": "x"})


def test_chat_answers_stream_as_openais_chunks(models: LocalModels) -> None:
    _, chat = answer_one(models, CHAT_COMPLETIONS_URL, {"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    events = b"".join(chat_completion_chunks(chat, include_usage=True)).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    chunks = [orjson.loads(event.removeprefix(b"data: ")) for event in events[:-2]]
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)
        assert chunk["id"] == chat["id"] and chunk["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == \
        chat["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == chat["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])
    without_usage = [orjson.loads(e.removeprefix(b"data: ")) for e in
                     b"".join(chat_completion_chunks(chat, include_usage=False)).split(b"\n\n")[:-2]]
    assert all("usage" not in c for c in without_usage) and without_usage[-1]["choices"][0]["finish_reason"]


def test_stream_options_need_stream() -> None:
    assert stream_options({}) == (False, False)
    assert stream_options({"stream": True, "stream_options": {"include_usage": True}}) == (True, True)
    with pytest.raises(InvalidRequest, match="only allowed when 'stream' is enabled"):
        stream_options({"stream_options": {"include_usage": True}})
    with pytest.raises(InvalidRequest, match="expected a boolean"):
        stream_options({"stream": "yes"})


def test_the_schema_excerpt_catches_a_wrong_answer(models: LocalModels) -> None:
    _, response = answer_one(models, RESPONSES_URL, {"model": "m", "input": "x"})
    broken = {**response, "status": "done", "output": [{"type": "message", "content": "text"}]}
    del broken["tools"]
    errors = "\n".join(schema_errors("Response", broken))
    assert "'tools' is a required property" in errors and "status: 'done' is not valid" in errors
    assert "output/0/content: 'text' is not of type 'array'" in errors


def test_answer_usage_reads_every_endpoints_names(models: LocalModels) -> None:
    body = {"model": "m", "input": "hello there"}
    response = answer_one(models, RESPONSES_URL, body)
    chat = answer_one(models, CHAT_COMPLETIONS_URL, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    (embedding,) = embed_many(models, [body])
    assert answer_usage(response) == (response[1]["usage"]["input_tokens"], response[1]["usage"]["output_tokens"])
    assert answer_usage(chat) == (chat[1]["usage"]["prompt_tokens"], chat[1]["usage"]["completion_tokens"])
    assert answer_usage(embedding) == (embedding[1]["usage"]["prompt_tokens"], 0)
    assert min(answer_usage(response)) > 0

"""The batch core for the Responses API (and legacy completions): bodies, token counts, files, results."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from batch_assets.batching.encodings import count_text_tokens
from batch_assets.batching.prepare import prepare_responses_requests
from batch_assets.batching.protocol import COMPLETIONS_URL, RESPONSES_URL, SUPPORTED_URLS
from batch_assets.batching.request_files import BatchLimits, write_request_files
from batch_assets.batching.requests import (
    json_schema_response_format,
    json_schema_text_format,
    label_schema,
    responses_body,
)
from batch_assets.batching.results import RESULT_SCHEMA, parse_batch_results
from batch_assets.batching.tokens import (
    count_chat_tokens,
    count_request_tokens,
    count_responses_tokens,
    responses_chat_messages,
)

MODEL = "gpt-4o-mini"
LABELS = ["positive", "negative", "neutral"]


def test_the_endpoint_set_is_defined_once_and_holds_responses_and_completions() -> None:
    assert set(SUPPORTED_URLS) == {"/v1/embeddings", "/v1/chat/completions", "/v1/responses", "/v1/completions"}


# -- bodies ------------------------------------------------------------------------------------------
def test_responses_body_writes_only_what_is_set() -> None:
    assert responses_body(MODEL, "Hello") == {"model": MODEL, "input": "Hello"}
    text_format = json_schema_text_format("sentiment", label_schema(LABELS))
    body = responses_body(MODEL, [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
                          instructions="Classify.", max_output_tokens=16, temperature=0, text_format=text_format)
    assert body == {
        "model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        "instructions": "Classify.", "max_output_tokens": 16, "temperature": 0,
        "text": {"format": {"type": "json_schema", "name": "sentiment", "schema": label_schema(LABELS),
                            "strict": True}},
    }
    # the Responses API flattens what chat completions nest under `json_schema`
    assert {k: v for k, v in text_format.items() if k != "type"} == \
        json_schema_response_format("sentiment", label_schema(LABELS))["json_schema"]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"input": ""}, "input is empty"),
    ({"input": []}, "non-empty list"),
    ({"input": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input_text"),
    ({"max_output_tokens": 15}, ">= 16"),
    ({"max_output_tokens": True}, ">= 16"),
    ({"temperature": 2.5}, r"\[0, 2\]"),
    ({"instructions": ""}, "instructions"),
    ({"text_format": {"type": "json_schema", "schema": {}}}, "'name'"),
    ({"text_format": {"type": "xml"}}, "text_format"),
])
def test_responses_body_refuses_what_openai_would(kwargs: dict, needle: str) -> None:
    args = {"input": "Hello", **kwargs}
    with pytest.raises(ValueError, match=needle):
        responses_body(MODEL, args.pop("input"), **args)


def test_reasoning_models_keep_the_default_temperature() -> None:
    with pytest.raises(ValueError, match="default temperature"):
        responses_body("o3-mini", "Hello", temperature=0)
    assert responses_body("o3-mini", "Hello", max_output_tokens=2000)["max_output_tokens"] == 2000


# -- token counts ------------------------------------------------------------------------------------
def test_responses_tokens_are_the_cookbook_formula_over_the_equivalent_messages() -> None:
    text = "A moving, beautifully acted film."
    instructions = "Classify the sentiment."
    as_chat = count_chat_tokens([[{"role": "developer", "content": instructions}, {"role": "user", "content": text}]],
                                MODEL)
    assert count_responses_tokens([text], MODEL, instructions=instructions) == as_chat
    # 3 per message + role + content, + 3 priming the reply
    role_tokens = sum(count_text_tokens(["developer", "user"], MODEL))
    assert as_chat == [3 + 3 + role_tokens + sum(count_text_tokens([instructions, text], MODEL)) + 3]
    parts = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]
    assert count_responses_tokens([parts], MODEL, instructions=instructions) == as_chat


def test_responses_chat_messages_and_what_cannot_be_counted() -> None:
    assert responses_chat_messages("Hi", "Be brief") == [{"role": "developer", "content": "Be brief"},
                                                          {"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match="function_call"):
        responses_chat_messages([{"type": "function_call", "name": "f", "arguments": "{}"}])
    with pytest.raises(ValueError, match="input_image"):
        count_responses_tokens([[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]], MODEL)


def test_count_request_tokens_for_responses_and_completions() -> None:
    bodies = [responses_body(MODEL, "Hello there", instructions="Be brief"), responses_body(MODEL, "Hi")]
    assert count_request_tokens(RESPONSES_URL, bodies) == [
        count_responses_tokens(["Hello there"], MODEL, instructions="Be brief")[0],
        count_responses_tokens(["Hi"], MODEL)[0],
    ]
    completions = [{"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"},
                   {"model": "gpt-3.5-turbo-instruct", "prompt": ["one", "two"]},
                   {"model": "gpt-3.5-turbo-instruct", "prompt": [1, 2, 3]}]
    expected_first = count_text_tokens(["Say this is a test"], "gpt-3.5-turbo-instruct")[0]
    assert count_request_tokens(COMPLETIONS_URL, completions) == [expected_first, 2, 3]
    with pytest.raises(ValueError, match="no 'input'"):
        count_request_tokens(RESPONSES_URL, [{"model": MODEL}])


# -- request files -----------------------------------------------------------------------------------
def test_prepare_responses_requests_writes_lines_with_exact_tokens(tmp_path: Path) -> None:
    texts = ["I loved it.", "Dull and long.", "Two brothers inherit a farm."]
    text_format = json_schema_text_format("sentiment", label_schema(LABELS))
    prepared = prepare_responses_requests(["d1", "d2", "d3"], texts, MODEL, instructions="Classify the review.",
                                          custom_id_prefix="s-", max_output_tokens=16, text_format=text_format)
    files = write_request_files(prepared, tmp_path, limits=BatchLimits(), file_stem="sentiment")
    assert len(files) == 1 and files[0].url == RESPONSES_URL and files[0].n_requests == 3
    lines = [orjson.loads(x) for x in files[0].path.read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == ["s-d1", "s-d2", "s-d3"]
    assert {x["url"] for x in lines} == {RESPONSES_URL}
    assert lines[0]["body"] == responses_body(MODEL, texts[0], instructions="Classify the review.",
                                              max_output_tokens=16, text_format=text_format)
    assert files[0].input_tokens == sum(count_request_tokens(RESPONSES_URL, [x["body"] for x in lines]))


def test_prepare_responses_requests_checks_eagerly() -> None:
    with pytest.raises(ValueError, match="got 2 ids but 1 inputs"):
        prepare_responses_requests(["a", "b"], ["x"], MODEL)
    with pytest.raises(ValueError, match=">= 16"):
        prepare_responses_requests(["a"], ["x"], MODEL, max_output_tokens=4)


# -- results -----------------------------------------------------------------------------------------
def _line(cid: str, body: dict, status: int = 200) -> dict:
    return {"id": f"batch_req_{cid}", "custom_id": cid,
            "response": {"status_code": status, "request_id": f"req_{cid}", "body": body}, "error": None}


def _response(text_parts: list[str], *, status: str = "completed", reason: str | None = None) -> dict:
    """A Response object as OpenAI's batch output carries it (a reasoning item first, as o-series send)."""
    return {
        "id": "resp_1", "object": "response", "created_at": 1, "status": status, "model": "gpt-4o-mini-2024-07-18",
        "error": None, "incomplete_details": {"reason": reason} if reason else None,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": status,
             "content": [{"type": "output_text", "text": t, "annotations": []} for t in text_parts]
             + [{"type": "refusal", "refusal": "not this"}]},
        ],
        "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 25},
    }


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return path


def test_responses_results_parse_into_the_same_columns(tmp_path: Path) -> None:
    output = _write(tmp_path / "out.jsonl", [
        _line("a", _response(['{"label":', ' "positive"}'])),
        _line("b", _response(['{"lab'], status="incomplete", reason="max_output_tokens")),
    ])
    errors = _write(tmp_path / "err.jsonl", [
        _line("c", {"error": {"message": "Invalid 'max_output_tokens'", "type": "invalid_request_error",
                              "param": "max_output_tokens", "code": "integer_below_min_value"}}, 400),
    ])
    rows = {r["custom_id"]: r for r in parse_batch_results(
        url=RESPONSES_URL, expected_custom_ids=["a", "b", "c", "d"], output_path=output, error_path=errors,
        batch_status="completed").iter_rows(named=True)}
    assert rows["a"]["outcome"] == "succeeded" and rows["a"]["content"] == '{"label": "positive"}'
    assert (rows["a"]["prompt_tokens"], rows["a"]["completion_tokens"]) == (20, 5)
    assert rows["a"]["finish_reason"] == "stop" and rows["a"]["response_model"] == "gpt-4o-mini-2024-07-18"
    assert rows["b"]["finish_reason"] == "length" and rows["b"]["content"] == '{"lab'
    assert rows["c"]["outcome"] == "http_error" and rows["c"]["error_code"] == "integer_below_min_value"
    assert rows["c"]["content"] is None
    assert rows["d"]["outcome"] == "missing"


def test_completions_results_parse_into_the_same_columns(tmp_path: Path) -> None:
    body = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "This is a test.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
    df = parse_batch_results(url=COMPLETIONS_URL, expected_custom_ids=["a"],
                             output_path=_write(tmp_path / "out.jsonl", [_line("a", body)]), error_path=None,
                             batch_status="completed")
    assert df.select("content", "finish_reason", "prompt_tokens", "completion_tokens").row(0) == \
        ("This is a test.", "stop", 5, 5)
    assert df.schema == RESULT_SCHEMA  # the same columns as every endpoint

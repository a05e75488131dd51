"""Exact token counts, offline, checked against numbers OpenAI published."""

from __future__ import annotations

import socket

import pytest
import tiktoken_ext.openai_public as openai_public

from batch_assets.batching import encodings as E
from batch_assets.batching import tokens as T
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL
from batch_assets.batching.requests import json_schema_response_format, label_schema

# The OpenAI cookbook "How to count tokens with tiktoken" example conversation. The cookbook shows
# the OpenAI API reporting 129 prompt tokens for gpt-3.5-turbo / gpt-4 and 124 for gpt-4o /
# gpt-4o-mini for exactly these messages.
COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},  # noqa: E501
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},  # noqa: E501
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},  # noqa: E501
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},  # noqa: E501
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},  # noqa: E501
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("token counting tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"), ("gpt-4.5-preview", "o200k_base"), ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"), ("o1", "o200k_base"), ("o3-mini", "o200k_base"), ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"), ("text-embedding-3-large", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("local/all-MiniLM-L6-v2", "cl100k_base"), ("local/SmolLM2-135M-Instruct", "cl100k_base"),
        ("my-own-embedding-model", "cl100k_base"), ("llama-3.1-8b-instant", "o200k_base"), ("", "o200k_base"),
    ],
)
def test_model_to_encoding(model: str, encoding: str) -> None:
    assert E.encoding_name_for_model(model) == encoding


def test_encodings_are_tiktokens_own_definitions_and_cached() -> None:
    enc = E.get_encoding("o200k_base")
    assert enc is E.get_encoding("o200k_base")
    assert enc.name == "o200k_base"
    assert enc.n_vocab == 200019  # 199998 ranks + <|endoftext|> 199999 + <|endofprompt|> 200018
    assert E.get_encoding("cl100k_base").n_vocab == 100277
    assert set(enc._special_tokens) == {openai_public.ENDOFTEXT, openai_public.ENDOFPROMPT}


def test_unknown_encoding_is_refused_not_downloaded() -> None:
    with pytest.raises(ValueError, match="not available offline"):
        E.get_encoding("r50k_base")


def test_known_token_ids() -> None:
    # Token ids printed in the OpenAI cookbook.
    cl100k, o200k = E.get_encoding("cl100k_base"), E.get_encoding("o200k_base")
    assert cl100k.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert cl100k.encode_ordinary("お誕生日おめでとう") == [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]
    assert o200k.encode_ordinary("お誕生日おめでとう") == [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]


def test_count_text_tokens_known_counts() -> None:
    assert E.count_text_tokens(["hello world"], "gpt-4o") == [2]
    assert E.count_text_tokens(["hello world"], "text-embedding-3-small") == [2]
    assert E.count_text_tokens(["お誕生日おめでとう", "", "hello world"], "gpt-4o-mini") == [8, 0, 2]
    assert E.count_text_tokens([], "gpt-4o") == []


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert E.count_text_tokens(["<|endoftext|>"], "gpt-4o") == [7]


def test_lone_surrogate_does_not_crash() -> None:
    assert E.count_text_tokens(["bad \ud800 text"], "gpt-4o")[0] > 0


def test_threaded_counts_equal_single_thread_counts_in_order() -> None:
    texts = [f"review number {i}: " + "good " * (i % 17) + "bad" * (i % 5) for i in range(10_000)]
    one = E.count_text_tokens(texts, "gpt-4o", num_threads=1)
    assert E.count_text_tokens(texts, "gpt-4o", num_threads=2) == one
    assert E.count_text_tokens(texts, "gpt-4o", num_threads=3) == one
    with pytest.raises(ValueError, match="num_threads"):
        E.count_text_tokens(texts, "gpt-4o", num_threads=0)


@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129),
                                                 ("gpt-3.5-turbo", 129)])
def test_cookbook_conversation_matches_the_api_count(model: str, expected: int) -> None:
    assert T.count_chat_tokens([COOKBOOK_MESSAGES], model) == [expected]


def test_chat_overhead_is_3_per_message_1_per_name_and_3_for_the_reply() -> None:
    enc = E.get_encoding("o200k_base")
    content_tokens = sum(len(enc.encode_ordinary(v)) for m in COOKBOOK_MESSAGES for v in m.values())
    n_names = sum("name" in m for m in COOKBOOK_MESSAGES)
    assert T.count_chat_tokens([COOKBOOK_MESSAGES], "gpt-4o") == [
        content_tokens + 3 * len(COOKBOOK_MESSAGES) + n_names + 3
    ]
    # "user" and "hello world" are 1 and 2 tokens: 3 + 1 + 2 + 3.
    assert T.count_chat_tokens([[{"role": "user", "content": "hello world"}]], "gpt-4o") == [9]
    assert T.count_chat_tokens([[]], "gpt-4o") == [3]


def test_chat_counts_are_per_conversation_with_shared_strings() -> None:
    system = {"role": "system", "content": "Classify the sentiment of the review."}
    convs = [[system, {"role": "user", "content": text}] for text in ["great", "awful film", "great"]]
    batched = T.count_chat_tokens(convs, "gpt-4o-mini")
    assert batched == [T.count_chat_tokens([c], "gpt-4o-mini")[0] for c in convs]
    assert batched[0] == batched[2] and batched[1] > batched[0]


def test_chat_text_parts_and_none_content() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]}]
    assert T.count_chat_tokens([parts], "gpt-4o") == [3 + 1 + 1 + 1 + 3]
    assert T.count_chat_tokens([[{"role": "assistant", "content": None}]], "gpt-4o") == [3 + 1 + 3]


def test_chat_refuses_what_it_cannot_count() -> None:
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(ValueError, match="image_url"):
        T.count_chat_tokens([image], "gpt-4o")
    with pytest.raises(ValueError, match="tool_calls"):
        T.count_chat_tokens([[{"role": "assistant", "content": None, "tool_calls": [{}]}]], "gpt-4o")
    with pytest.raises(ValueError, match="conversation 0"):
        T.count_chat_tokens(["not a list"], "gpt-4o")


def test_count_request_tokens_embeddings_and_chat_by_each_bodys_model() -> None:
    bodies = [
        {"model": "text-embedding-3-small", "input": "hello world"},
        {"model": "text-embedding-3-large", "input": ["hello world", "お誕生日おめでとう"]},
        {"model": "text-embedding-3-small", "input": [1, 2, 3]},
        {"model": "text-embedding-3-small", "input": [[1, 2], [3]]},
    ]
    assert T.count_request_tokens(EMBEDDINGS_URL, bodies) == [2, 2 + 9, 3, 3]
    chats = [{"model": "gpt-4o", "messages": COOKBOOK_MESSAGES}, {"model": "gpt-4", "messages": COOKBOOK_MESSAGES}]
    assert T.count_request_tokens(CHAT_COMPLETIONS_URL, chats) == [124, 129]


def test_count_request_tokens_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unsupported endpoint"):
        T.count_request_tokens("/v1/moderations", [])
    with pytest.raises(ValueError, match="no 'model'"):
        T.count_request_tokens(EMBEDDINGS_URL, [{"input": "x"}])
    with pytest.raises(ValueError, match="'messages'"):
        T.count_request_tokens(CHAT_COMPLETIONS_URL, [{"model": "gpt-4o"}])
    with pytest.raises(ValueError, match="'input'"):
        T.count_request_tokens(EMBEDDINGS_URL, [{"model": "text-embedding-3-small", "input": []}])


# -- what a chat request pays on top of its messages ------------------------------------------------------
# The cookbook's function-calling example ("Counting tokens for chat completions with tool calls"): the API
# reported 105 prompt tokens for gpt-3.5-turbo / gpt-4 and 101 for gpt-4o / gpt-4o-mini.
COOKBOOK_TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return",
                         "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
SENTIMENT_FORMAT = json_schema_response_format("sentiment", label_schema(["positive", "negative", "neutral"]))


@pytest.mark.parametrize(("model", "expected"), [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101),
                                                 ("gpt-4o-mini", 101)])
def test_tools_are_counted_as_the_cookbook_example_measured(model: str, expected: int) -> None:
    assert T.count_chat_tokens([COOKBOOK_TOOL_MESSAGES], model, tools=COOKBOOK_TOOLS) == [expected]
    body = {"model": model, "messages": COOKBOOK_TOOL_MESSAGES, "tools": COOKBOOK_TOOLS}
    assert T.count_request_tokens(CHAT_COMPLETIONS_URL, [body]) == [expected]
    # without the tools the messages alone are a third of it
    assert T.count_chat_tokens([COOKBOOK_TOOL_MESSAGES], model)[0] < expected / 2


def test_tool_rule_parts() -> None:
    enc = E.get_encoding("o200k_base")

    def n(text: str) -> int:
        return len(enc.encode_ordinary(text))

    bare = [{"type": "function", "function": {"name": "ping", "description": "Ping."}}]
    assert T.tools_tokens(bare, "gpt-4o") == 7 + n("ping:Ping") + 12  # one trailing "." dropped
    assert T.tools_tokens(bare, "gpt-4") == 10 + len(E.get_encoding("cl100k_base").encode_ordinary("ping:Ping")) + 12
    assert T.tools_tokens(bare * 2, "gpt-4o") == 2 * (7 + n("ping:Ping")) + 12  # the end is counted once
    nested = [{"type": "function", "function": {"name": "f", "description": "", "parameters": {
        "type": "object", "properties": {"tags": {"type": "array", "description": "d", "items": {"type": "string"}}}}}}]
    nested_json = n('{"items":{"type":"string"}}')  # beyond the cookbook: nested schema as compact JSON
    assert T.tools_tokens(nested, "gpt-4o") == 7 + n("f:") + 3 + 3 + n("tags:array:d") + nested_json + 12
    assert T.tools_tokens(None, "gpt-4o") == T.tools_tokens([], "gpt-4o") == 0
    assert T.tools_tokens(bare, "gpt-5-mini") == T.tools_tokens(bare, "gpt-4o")  # o200k family constants


def test_tools_that_cannot_be_counted_are_refused() -> None:
    with pytest.raises(ValueError, match="tool 0: only .*function"):
        T.tools_tokens([{"type": "custom", "custom": {"name": "x"}}], "gpt-4o")
    with pytest.raises(ValueError, match="needs a 'name'"):
        T.tools_tokens([{"type": "function", "function": {"description": "x"}}], "gpt-4o")


def test_response_format_schema_overhead_is_counted() -> None:
    enc = E.get_encoding("o200k_base")
    # The rule: the schema as compact JSON without required / additionalProperties, + 9.
    compact = '{"type":"object","properties":{"label":{"type":"string","enum":["positive","negative","neutral"]}}}'
    overhead = len(enc.encode_ordinary(compact)) + 9
    assert overhead == 32
    assert T.response_format_tokens(SENTIMENT_FORMAT, "gpt-4o-mini") == overhead
    messages = [{"role": "system", "content": "Label the review."}, {"role": "user", "content": "Review: great"}]
    plain = T.count_chat_tokens([messages, messages], "gpt-4o-mini")
    assert T.count_chat_tokens([messages, messages], "gpt-4o-mini", response_format=SENTIMENT_FORMAT) == [
        plain[0] + overhead, plain[1] + overhead]
    body = {"model": "gpt-4o-mini", "messages": messages, "response_format": SENTIMENT_FORMAT}
    assert T.count_request_tokens(CHAT_COMPLETIONS_URL, [body, {**body, "response_format": None}]) == [
        plain[0] + overhead, plain[0]]


def test_schema_rule_drops_keys_at_every_depth_and_accepts_both_shapes() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}},
                                                     "required": ["b"], "additionalProperties": False}},
              "required": ["a"], "additionalProperties": False, "$schema": "http://json-schema.org/draft-07/schema#"}
    stripped = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}
    chat = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    responses = {"type": "json_schema", "name": "x", "schema": schema}
    expected = len(E.get_encoding("o200k_base").encode_ordinary(
        '{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"string"}}}}}')) + 9
    assert T.response_format_tokens(chat, "gpt-4.1") == T.response_format_tokens(responses, "gpt-4.1") == expected
    assert T.response_format_tokens({"type": "json_schema", "json_schema": {"schema": stripped}}, "gpt-4.1") == expected


def test_formats_without_a_schema_add_nothing_and_bad_ones_are_refused() -> None:
    assert T.response_format_tokens(None, "gpt-4o") == 0
    assert T.response_format_tokens({"type": "text"}, "gpt-4o") == 0
    assert T.response_format_tokens({"type": "json_object"}, "gpt-4o") == 0
    with pytest.raises(ValueError, match="type 'xml'"):
        T.response_format_tokens({"type": "xml"}, "gpt-4o")
    with pytest.raises(ValueError, match="needs a 'schema'"):
        T.response_format_tokens({"type": "json_schema", "json_schema": {"name": "x"}}, "gpt-4o")


def test_overhead_is_counted_once_per_distinct_format(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = T.chat_overhead_tokens

    def counting(model: str, **kwargs: object) -> int:
        calls.append(model)
        return real(model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(T, "chat_overhead_tokens", counting)
    messages = [{"role": "user", "content": "hi"}]
    bodies = [{"model": "gpt-4o-mini", "messages": messages, "response_format": dict(SENTIMENT_FORMAT)}
              for _ in range(1_000)]
    counts = T.count_request_tokens(CHAT_COMPLETIONS_URL, bodies)
    assert len(set(counts)) == 1 and len(calls) == 1
    T.count_chat_tokens([messages] * 1_000, "gpt-4o-mini", response_format=SENTIMENT_FORMAT, tools=COOKBOOK_TOOLS)
    assert len(calls) == 2


def test_names_are_counted() -> None:
    with_name = [{"role": "user", "name": "example_user", "content": "hello world"}]
    without = [{"role": "user", "content": "hello world"}]
    name_tokens = len(E.get_encoding("o200k_base").encode_ordinary("example_user"))
    assert T.count_chat_tokens([with_name], "gpt-4o")[0] == (
        T.count_chat_tokens([without], "gpt-4o")[0] + name_tokens + 1)

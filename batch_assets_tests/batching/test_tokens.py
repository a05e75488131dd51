"""Exact token counts, offline, checked against numbers OpenAI published."""

from __future__ import annotations

import socket

import pytest
import tiktoken_ext.openai_public as openai_public

from batch_assets.batching import tokens as T
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL

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
    assert T.encoding_name_for_model(model) == encoding


def test_encodings_are_tiktokens_own_definitions_and_cached() -> None:
    enc = T.get_encoding("o200k_base")
    assert enc is T.get_encoding("o200k_base")
    assert enc.name == "o200k_base"
    assert enc.n_vocab == 200019  # 199998 ranks + <|endoftext|> 199999 + <|endofprompt|> 200018
    assert T.get_encoding("cl100k_base").n_vocab == 100277
    assert set(enc._special_tokens) == {openai_public.ENDOFTEXT, openai_public.ENDOFPROMPT}


def test_unknown_encoding_is_refused_not_downloaded() -> None:
    with pytest.raises(ValueError, match="not available offline"):
        T.get_encoding("r50k_base")


def test_known_token_ids() -> None:
    # Token ids printed in the OpenAI cookbook.
    cl100k, o200k = T.get_encoding("cl100k_base"), T.get_encoding("o200k_base")
    assert cl100k.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert cl100k.encode_ordinary("お誕生日おめでとう") == [33334, 45918, 243, 21990, 9080, 33334, 62004, 16556, 78699]
    assert o200k.encode_ordinary("お誕生日おめでとう") == [8930, 9697, 243, 128225, 8930, 17693, 4344, 48669]


def test_count_text_tokens_known_counts() -> None:
    assert T.count_text_tokens(["hello world"], "gpt-4o") == [2]
    assert T.count_text_tokens(["hello world"], "text-embedding-3-small") == [2]
    assert T.count_text_tokens(["お誕生日おめでとう", "", "hello world"], "gpt-4o-mini") == [8, 0, 2]
    assert T.count_text_tokens([], "gpt-4o") == []


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert T.count_text_tokens(["<|endoftext|>"], "gpt-4o") == [7]


def test_lone_surrogate_does_not_crash() -> None:
    assert T.count_text_tokens(["bad \ud800 text"], "gpt-4o")[0] > 0


def test_threaded_counts_equal_single_thread_counts_in_order() -> None:
    texts = [f"review number {i}: " + "good " * (i % 17) + "bad" * (i % 5) for i in range(10_000)]
    one = T.count_text_tokens(texts, "gpt-4o", num_threads=1)
    assert T.count_text_tokens(texts, "gpt-4o", num_threads=2) == one
    assert T.count_text_tokens(texts, "gpt-4o", num_threads=3) == one
    with pytest.raises(ValueError, match="num_threads"):
        T.count_text_tokens(texts, "gpt-4o", num_threads=0)


@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129),
                                                 ("gpt-3.5-turbo", 129)])
def test_cookbook_conversation_matches_the_api_count(model: str, expected: int) -> None:
    assert T.count_chat_tokens([COOKBOOK_MESSAGES], model) == [expected]


def test_chat_overhead_is_3_per_message_1_per_name_and_3_for_the_reply() -> None:
    enc = T.get_encoding("o200k_base")
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

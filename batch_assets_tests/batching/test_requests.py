from __future__ import annotations

import re

import polars as pl
import pytest

from batch_assets.batching.requests import (
    chat_body,
    custom_ids_for,
    embedding_body,
    json_schema_response_format,
    label_schema,
)

VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")

def custom_id(item_id: str, prefix: str = "") -> str:
    [one] = custom_ids_for([item_id], prefix)
    return one


AWKWARD_IDS = [
    "doc-1", "a", "x" * 63, "x" * 64, "x" * 65, "x" * 500, "doc 1", "doc_1", "doc/1", "doc:1", "doc.1",
    "ünïcödé", "🙂", "a b", "a_b", "a\nb", "a-b", " ", "_", "-", "2024-01-01T00:00:00Z", "x" * 31 + "/",
]


def test_valid_short_ids_stay_readable() -> None:
    assert custom_id("doc-1") == "doc-1"
    assert custom_id("review_000042", prefix="a2-") == "a2-review_000042"
    assert custom_id("x" * 63) == "x" * 63


@pytest.mark.parametrize("item_id", AWKWARD_IDS)
def test_every_custom_id_is_valid_for_every_provider(item_id: str) -> None:
    cid = custom_id(item_id)
    assert VALID.fullmatch(cid) and len(cid) <= 64
    assert custom_id(item_id) == cid  # deterministic


def test_ids_differing_only_in_invalid_characters_do_not_collide() -> None:
    ids = ["doc 1", "doc/1", "doc:1", "doc.1", "doc_1", "doc\t1", "doc🙂1"]
    cids = [custom_id(i) for i in ids]
    assert len(set(cids)) == len(ids)
    assert all(c.startswith("doc_1") for c in cids)  # readable head


def test_long_ids_with_a_shared_head_do_not_collide() -> None:
    ids = ["p" * 100 + str(i) for i in range(1000)]
    cids = [custom_id(i) for i in ids]
    assert len(set(cids)) == 1000 and all(len(c) == 64 for c in cids)


def test_a_kept_id_never_equals_a_hashed_one() -> None:
    hashed = custom_id("a b")
    assert len(hashed) == 64
    assert custom_id(hashed) != hashed  # a valid 64-char id is itself hashed, to a different id
    assert len({custom_id(i) for i in AWKWARD_IDS}) == len(AWKWARD_IDS)


def test_prefix_rules() -> None:
    assert len(custom_id("x" * 63, prefix="r1-")) == 64  # over 63 with the prefix: hashed
    with pytest.raises(ValueError, match="prefix"):
        custom_id("a", prefix="bad prefix")
    with pytest.raises(ValueError, match="non-empty"):
        custom_id("")


def test_many_ids_at_once_get_the_ids_each_gets_alone() -> None:
    ids = AWKWARD_IDS + [f"doc-{i}" for i in range(100)]
    assert custom_ids_for(ids) == [custom_id(i) for i in ids]
    assert custom_ids_for(pl.Series(ids), prefix="a1-") == [custom_id(i, "a1-") for i in ids]
    assert custom_ids_for([]) == []
    with pytest.raises(ValueError, match="non-empty"):
        custom_ids_for(["a", ""])
    with pytest.raises(ValueError, match="non-empty"):
        custom_ids_for(pl.Series(["a", None]))


def test_embedding_body() -> None:
    assert embedding_body("text-embedding-3-small", "hi") == {"model": "text-embedding-3-small", "input": "hi"}
    assert embedding_body("text-embedding-3-large", ["a", "b"], dimensions=256) == {
        "model": "text-embedding-3-large", "input": ["a", "b"], "dimensions": 256,
    }


@pytest.mark.parametrize("bad", ["", [], ["ok", ""], None, 3, ["x"] * 2049])
def test_embedding_body_rejects_inputs_openai_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        embedding_body("text-embedding-3-small", bad)  # type: ignore[arg-type]


def test_empty_embedding_text_error_says_openai_rejects_it() -> None:
    with pytest.raises(ValueError, match="OpenAI rejects empty"):
        embedding_body("text-embedding-3-small", "")
    with pytest.raises(ValueError, match="dimensions"):
        embedding_body("text-embedding-3-small", "x", dimensions=0)
    with pytest.raises(ValueError, match="model"):
        embedding_body("", "x")


MESSAGES = [{"role": "system", "content": "Label it."}, {"role": "user", "content": "great film"}]


def test_chat_body_writes_only_what_is_set() -> None:
    assert chat_body("gpt-4o-mini", MESSAGES) == {"model": "gpt-4o-mini", "messages": MESSAGES}
    fmt = json_schema_response_format("sentiment", label_schema(["positive", "negative"]))
    body = chat_body("gpt-4o-mini", MESSAGES, max_tokens=10, temperature=0, seed=7, response_format=fmt)
    assert body == {
        "model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 10, "temperature": 0, "seed": 7,
        "response_format": fmt,
    }
    assert chat_body("gpt-5-mini", MESSAGES, max_completion_tokens=50)["max_completion_tokens"] == 50


def test_chat_body_validation() -> None:
    with pytest.raises(ValueError, match="non-empty list"):
        chat_body("gpt-4o", [])
    with pytest.raises(ValueError, match="role"):
        chat_body("gpt-4o", [{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match="content"):
        chat_body("gpt-4o", [{"role": "user"}])
    with pytest.raises(ValueError, match="max_tokens"):
        chat_body("gpt-4o", MESSAGES, max_tokens=0)
    with pytest.raises(ValueError, match="not both"):
        chat_body("gpt-4o", MESSAGES, max_tokens=5, max_completion_tokens=5)
    with pytest.raises(ValueError, match="temperature"):
        chat_body("gpt-4o", MESSAGES, temperature=3)
    with pytest.raises(ValueError, match="response_format"):
        chat_body("gpt-4o", MESSAGES, response_format={"json_schema": {}})


def test_reasoning_models_get_an_actionable_error_instead_of_failed_lines() -> None:
    with pytest.raises(ValueError, match="max_completion_tokens=20"):
        chat_body("o4-mini", MESSAGES, max_tokens=20)
    with pytest.raises(ValueError, match="default temperature"):
        chat_body("gpt-5-nano", MESSAGES, temperature=0)


def test_label_schema_and_response_format() -> None:
    schema = label_schema(["positive", "negative", "neutral"])
    assert schema == {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["positive", "negative", "neutral"]}},
        "required": ["label"],
        "additionalProperties": False,
    }
    assert json_schema_response_format("sentiment", schema) == {
        "type": "json_schema", "json_schema": {"name": "sentiment", "schema": schema, "strict": True},
    }
    for bad in ([], ["a", "a"], ["a", ""], "ab"):
        with pytest.raises(ValueError):
            label_schema(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        json_schema_response_format("has space", schema)
    with pytest.raises(ValueError, match="object"):
        json_schema_response_format("s", {"type": "string"})

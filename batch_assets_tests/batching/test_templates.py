"""Template-built requests (a body serialised once, each request's text spliced in) are byte for byte and token
for token the requests built one dict at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from batch_assets.batching.request_files import (
    BatchLimits,
    PreparedRequest,
    prepare_chat_requests,
    prepare_embedding_requests,
    prepare_responses_requests,
    write_request_files,
)
from batch_assets.batching.requests import (
    json_schema_response_format,
    json_schema_text_format,
    label_schema,
    responses_body,
)
from batch_assets.batching.templates import HOLE, BodyTemplate, Conversations
from batch_assets.batching.tokens import count_responses_tokens

TEXTS = ["good", 'bad "quoted"\n line', "émoji 🎬 お誕生日", "\\ back\tslash", "x" * 300]
IDS = [f"item-{i}" for i in range(len(TEXTS))]


def _file_bytes(requests: list[PreparedRequest], out: Path) -> bytes:
    [written] = write_request_files(requests, out, limits=BatchLimits(), file_stem="t")
    return written.path.read_bytes()


def test_conversations_are_the_built_conversations(tmp_path: Path) -> None:
    head = ({"role": "system", "content": 'Label it. "Really".'},)
    params = {"max_tokens": 5, "temperature": 0.0, "seed": 7,
              "response_format": json_schema_response_format("s", label_schema(("a", "b")))}
    lists = [[dict(head[0]), {"role": "user", "content": f"Review: {t}"}] for t in [*TEXTS, ""]]
    lazy = list(prepare_chat_requests([*IDS, "e"], Conversations(head, [*TEXTS, ""], "Review: "), "gpt-4o-mini",
                                      **params))
    built = list(prepare_chat_requests([*IDS, "e"], lists, "gpt-4o-mini", **params))
    assert [r.input_tokens for r in lazy] == [r.input_tokens for r in built]
    assert [r.body for r in lazy] == [r.body for r in built]
    assert _file_bytes(lazy, tmp_path / "lazy") == _file_bytes(built, tmp_path / "built")
    assert Conversations(head, TEXTS)[1] == [dict(head[0]), {"role": "user", "content": TEXTS[1]}]


def test_conversations_check_their_texts() -> None:
    not_all_text: list[Any] = ["x", 3]
    with pytest.raises(ValueError, match="conversation 1: the user message must be a str"):
        list(prepare_chat_requests(["a", "b"], Conversations((), not_all_text), "gpt-4o-mini"))
    with pytest.raises(ValueError, match="role"):
        prepare_chat_requests(["a"], Conversations(({"role": "narrator", "content": "x"},), ["y"]), "gpt-4o-mini")


def test_embedding_bodies_are_spliced_exactly() -> None:
    for request in prepare_embedding_requests(IDS, TEXTS, "text-embedding-3-small", dimensions=256):
        assert request.body_json == orjson.dumps(dict(request.body))
        assert request.body["input"] in TEXTS and request.body.get("dimensions") == 256


def test_responses_text_inputs_are_the_built_bodies() -> None:
    fmt = json_schema_text_format("titles", {"type": "object", "properties": {"title": {"type": "string"}}})
    for instructions in ("Give it a title.", None):
        requests = list(prepare_responses_requests(IDS, TEXTS, "gpt-4o-mini", instructions=instructions,
                                                   max_output_tokens=32, text_format=fmt))
        assert [r.input_tokens for r in requests] == count_responses_tokens(
            TEXTS, "gpt-4o-mini", instructions=instructions, text_format=fmt)
        for request, text in zip(requests, TEXTS, strict=True):
            body = responses_body("gpt-4o-mini", text, instructions=instructions, max_output_tokens=32,
                                  text_format=fmt)
            assert request.body_json == orjson.dumps(body) and request.body == body


def test_a_template_has_exactly_one_hole() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        BodyTemplate({"a": HOLE, "b": HOLE})
    with pytest.raises(ValueError, match="exactly one"):
        BodyTemplate({"a": "x"})

"""Template-built requests (a body serialised once, each request's text spliced in) are byte for byte and token
for token the requests built one dict at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from batch_assets.batching.prepare import prepare_chat_requests, prepare_embedding_requests, prepare_responses_requests
from batch_assets.batching.request_files import BatchLimits, PreparedRequest, plan_request_files, write_request_files
from batch_assets.batching.requests import (
    json_schema_response_format,
    json_schema_text_format,
    label_schema,
    responses_body,
)
from batch_assets.batching.templates import HOLE, BodyTemplate, Conversations, DerivedTexts
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
    from_series = prepare_chat_requests([*IDS, "e"], Conversations(head, pl.Series([*TEXTS, ""]), "Review: "),
                                        "gpt-4o-mini", **params)
    assert _file_bytes(list(from_series), tmp_path / "series") == _file_bytes(built, tmp_path / "built2")
    assert Conversations(head, TEXTS)[1] == [dict(head[0]), {"role": "user", "content": TEXTS[1]}]


def test_derived_texts_are_made_a_slice_at_a_time_and_write_the_same_requests(tmp_path: Path) -> None:
    rows = pl.DataFrame({"name": [f"n{i}" for i in range(len(TEXTS))], "text": TEXTS})
    made: list[int] = []

    def build(part: pl.DataFrame) -> pl.Series:
        made.append(part.height)
        return part.select(pl.concat_str("name", pl.lit(": "), "text")).to_series()

    derived = DerivedTexts(rows, build)
    expected = [f"n{i}: {t}" for i, t in enumerate(TEXTS)]
    assert len(derived) == len(TEXTS) and derived[1] == expected[1] and derived[-1] == expected[-1]
    assert derived[1:3].series().to_list() == expected[1:3] and made[-1] == 2  # only the slice's rows were made
    with pytest.raises(IndexError):
        derived[len(TEXTS)]
    head = ({"role": "system", "content": "Summarise."},)
    from_rows = prepare_chat_requests(IDS, Conversations(head, derived), "gpt-4o-mini", max_tokens=9)
    from_list = prepare_chat_requests(IDS, Conversations(head, expected), "gpt-4o-mini", max_tokens=9)
    assert _file_bytes(list(from_rows), tmp_path / "rows") == _file_bytes(list(from_list), tmp_path / "list")


def test_a_text_builder_that_loses_rows_is_told_so() -> None:
    derived = DerivedTexts(pl.DataFrame({"x": [1, 2, 3]}), lambda part: pl.Series(["only one"]))
    with pytest.raises(ValueError, match="made 1 texts for 3 rows: make one per row"):
        Conversations((), derived).user_contents()


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


@pytest.mark.parametrize("limits", [
    BatchLimits(max_requests_per_file=2), BatchLimits(max_bytes_per_file=1500),
    BatchLimits(max_tokens_per_file=400), BatchLimits(max_embedding_inputs_per_file=3)])
def test_chunks_are_written_as_the_same_files_as_one_request_at_a_time(tmp_path: Path, limits: BatchLimits) -> None:
    texts = [f"{t} #{i}" for i in range(7) for t in TEXTS]
    ids = [f"i{i}" for i in range(len(texts))]
    answered = {ids[3]}
    for name, requests in (
            ("chat", prepare_chat_requests(ids, Conversations(({"role": "system", "content": "Be brief."},), texts),
                                           "gpt-4o-mini", max_tokens=9)),
            ("emb", prepare_embedding_requests(ids, texts, "text-embedding-3-small"))):
        chunked = plan_request_files(requests, tmp_path / name / "chunked", limits=limits, file_stem="p",
                                     keep=lambda item_id, _sha: item_id not in answered)
        one_by_one = plan_request_files(list(requests), tmp_path / name / "rows", limits=limits, file_stem="p",
                                        keep=lambda item_id, _sha: item_id not in answered)
        assert len(chunked.files) > 1 or (name, limits.max_embedding_inputs_per_file) == ("chat", 3)  # embeddings only
        assert [s.item_id for s in chunked.skipped] == [s.item_id for s in one_by_one.skipped] == [ids[3]]
        for a, b in zip(chunked.files, one_by_one.files, strict=True):
            assert a.path.name == b.path.name and a.path.read_bytes() == b.path.read_bytes()
            assert (a.custom_ids, a.item_ids, a.body_sha256s, a.request_tokens, a.n_bytes, a.input_tokens,
                    a.n_inputs, a.max_output_tokens) == (b.custom_ids, b.item_ids, b.body_sha256s, b.request_tokens,
                                                         b.n_bytes, b.input_tokens, b.n_inputs, b.max_output_tokens)


def test_chunks_refuse_duplicate_ids_and_oversized_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate custom_id"):
        write_request_files(prepare_embedding_requests(["a", "b", "a"], ["x", "y", "z"], "text-embedding-3-small"),
                            tmp_path, limits=BatchLimits(), file_stem="d")
    with pytest.raises(ValueError, match="over the per-file limit"):
        write_request_files(prepare_embedding_requests(["a"], ["x" * 500], "text-embedding-3-small"),
                            tmp_path, limits=BatchLimits(max_bytes_per_file=300), file_stem="d")

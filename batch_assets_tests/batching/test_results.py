"""parse_batch_results: one typed outcome row per submitted item, from OpenAI-format result files."""

from __future__ import annotations

import contextlib
import json
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, Outcome
from batch_assets.batching.results import (
    BATCH_FAILED_CODE,
    MISSING_RESULT_CODE,
    RESULT_SCHEMA,
    USAGE_SCHEMA,
    BatchResultFiles,
    ResultFileWarning,
    parse_batch_results,
    parse_batches_results,
    usage_totals,
)

# ---------------------------------------------------------------- fixtures in the Batch API's formats


def chat_ok(cid: str, content: str = "ok", *, model: str = "gpt-4o-mini-2024-07-18",
            prompt: int = 10, completion: int = 2, finish: str = "stop",
            cached: int | None = None, reasoning: int | None = None) -> dict:
    usage: dict = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached is not None:  # the API's own shape (audio_tokens beside it)
        usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": 0}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    body = {
        "id": f"chatcmpl-{cid}", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }
    return {"id": f"batch_req_{cid}", "custom_id": cid,
            "response": {"status_code": 200, "request_id": f"req_{cid}", "body": body}, "error": None}


def embedding_ok(cid: str, vector: list[float], *, model: str = "text-embedding-3-small", prompt: int = 5) -> dict:
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}],
            "model": model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
    return {"id": f"batch_req_{cid}", "custom_id": cid,
            "response": {"status_code": 200, "request_id": f"req_{cid}", "body": body}, "error": None}


def http_error(cid: str, status: int, code: str | None = "rate_limit_exceeded", message: str = "boom") -> dict:
    body = {"error": {"message": message, "type": "requests", "param": None, "code": code}}
    return {"id": f"batch_req_{cid}", "custom_id": cid,
            "response": {"status_code": status, "request_id": f"req_{cid}", "body": body}, "error": None}


def batch_error(cid: str, code: str, message: str = "not run") -> dict:
    return {"id": f"batch_req_{cid}", "custom_id": cid, "response": None, "error": {"code": code, "message": message}}


def write_jsonl(path: Path, lines: list[dict], *, seed: int = 0) -> Path:
    lines = list(lines)
    random.Random(seed).shuffle(lines)  # result files are not in input order
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    return path


def parse(url: str, expected: list[str], output: Path | None, error: Path | None, status: str = "completed",
          **kwargs: object) -> pl.DataFrame:
    df = parse_batch_results(url=url, expected_custom_ids=expected, output_path=output, error_path=error,
                             batch_status=status, **kwargs)
    assert df.schema == RESULT_SCHEMA
    assert sorted(df["custom_id"].to_list()) == sorted(expected)  # exactly one row per expected id
    assert set(df["outcome"].unique()) <= set(Outcome)
    # rows come in no particular order; put them in input order for readable assertions
    order = pl.DataFrame({"custom_id": expected}, schema={"custom_id": pl.String}).with_row_index("_i")
    return df.join(order, on="custom_id").sort("_i").drop("_i")


def by_id(df: pl.DataFrame) -> dict[str, dict]:
    return {row["custom_id"]: row for row in df.iter_rows(named=True)}


# ---------------------------------------------------------------- tests


def test_chat_successes_and_http_errors_join_on_custom_id(tmp_path: Path) -> None:
    ids = [f"r{i}" for i in range(8)]
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok(f"r{i}", f"answer {i}", prompt=10 + i) for i in range(5)])
    error = write_jsonl(tmp_path / "err.jsonl", [
        http_error("r5", 429), http_error("r6", 500, code=None, message="server"),
        http_error("r7", 400, code="invalid_request", message="bad model"),
    ])

    rows = by_id(parse(CHAT_COMPLETIONS_URL, ids, output, error))

    assert rows["r3"] == {
        "custom_id": "r3", "outcome": "succeeded", "status_code": 200, "error_code": None, "error_message": None,
        "response_model": "gpt-4o-mini-2024-07-18", "prompt_tokens": 13, "completion_tokens": 2,
        "cached_tokens": None, "reasoning_tokens": None,
        "finish_reason": "stop", "content": "answer 3", "embedding": None,
    }
    assert (rows["r5"]["outcome"], rows["r5"]["status_code"], rows["r5"]["error_code"]) == (
        "http_error", 429, "rate_limit_exceeded")
    # a null error code falls back to the error type
    assert (rows["r6"]["status_code"], rows["r6"]["error_code"], rows["r6"]["error_message"]) == (
        500, "requests", "server")
    assert (rows["r7"]["outcome"], rows["r7"]["status_code"], rows["r7"]["error_message"]) == (
        "http_error", 400, "bad model")
    assert rows["r7"]["content"] is None and rows["r7"]["prompt_tokens"] is None


def test_embeddings_vectors_and_usage(tmp_path: Path) -> None:
    vectors = {f"d{i}": [0.5 * i, -0.25, 1e-3, float(i)] for i in range(4)}
    output = write_jsonl(tmp_path / "out.jsonl", [embedding_ok(cid, vec, prompt=3) for cid, vec in vectors.items()])

    df = parse(EMBEDDINGS_URL, list(vectors), output, None)

    assert df["outcome"].to_list() == ["succeeded"] * 4
    assert df["embedding"].dtype == pl.List(pl.Float32)
    for cid, vec in vectors.items():
        assert by_id(df)[cid]["embedding"] == pytest.approx(vec, rel=1e-6)
    assert df["completion_tokens"].null_count() == 4  # embeddings have no completion tokens
    assert df["content"].null_count() == 4
    assert df["cached_tokens"].null_count() == df["reasoning_tokens"].null_count() == 4
    assert usage_totals(df).rows() == [("text-embedding-3-small", 4, 12, 0, 0, 0)]


def test_all_failed_batch_has_no_output_file(tmp_path: Path) -> None:
    error = write_jsonl(tmp_path / "err.jsonl", [http_error("a", 401, "invalid_api_key"), http_error("b", 503)])
    df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], None, error)
    assert df["outcome"].to_list() == ["http_error", "http_error"]
    assert df["status_code"].to_list() == [401, 503]


def test_expired_batch_keeps_partial_results(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a"), chat_ok("b")])
    error = write_jsonl(tmp_path / "err.jsonl", [batch_error("c", "batch_expired", "expired")])

    df = parse(CHAT_COMPLETIONS_URL, ["a", "b", "c", "d"], output, error, status="expired")

    rows = by_id(df)
    assert [rows[c]["outcome"] for c in "abcd"] == ["succeeded", "succeeded", "expired", "expired"]
    assert rows["c"]["status_code"] is None and rows["c"]["error_code"] == "batch_expired"
    assert rows["c"]["error_message"] == "expired"
    # absent from both files in an expired batch: labelled expired (documented choice)
    assert rows["d"]["error_code"] == "batch_expired"


def test_cancelled_batch_keeps_partial_results(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a")])
    error = write_jsonl(tmp_path / "err.jsonl", [batch_error("b", "batch_cancelled"), http_error("c", 500)])
    df = parse(CHAT_COMPLETIONS_URL, ["a", "b", "c", "d"], output, error, status="cancelled")
    assert df["outcome"].to_list() == ["succeeded", "cancelled", "http_error", "cancelled"]
    assert df["error_code"].to_list()[1::2] == ["batch_cancelled", "batch_cancelled"]


def test_ids_absent_from_a_completed_batch_are_missing(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a")])
    df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], output, None)
    assert df["outcome"].to_list() == ["succeeded", "missing"]
    assert df["error_code"].to_list() == [None, MISSING_RESULT_CODE]


def test_failed_batch_is_all_missing_with_the_batch_error() -> None:
    df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], None, None, status="failed",
               batch_error_code="token_limit_exceeded", batch_error_message="Enqueued token limit reached")
    assert df["outcome"].to_list() == ["missing", "missing"]
    assert df["error_code"].to_list() == ["token_limit_exceeded"] * 2
    assert df["error_message"].to_list() == ["Enqueued token limit reached"] * 2
    assert parse(EMBEDDINGS_URL, ["a"], None, None, status="failed")["error_code"].to_list() == [BATCH_FAILED_CODE]


def test_unknown_non_http_error_is_missing_with_its_code(tmp_path: Path) -> None:
    error = write_jsonl(tmp_path / "err.jsonl", [batch_error("a", "internal_hiccup", "try later")])
    row = parse(CHAT_COMPLETIONS_URL, ["a"], None, error).row(0, named=True)
    assert (row["outcome"], row["error_code"], row["error_message"]) == ("missing", "internal_hiccup", "try later")


def test_empty_files_and_no_files(tmp_path: Path) -> None:
    (tmp_path / "out.jsonl").write_bytes(b"")
    (tmp_path / "err.jsonl").write_bytes(b"\n")
    df = parse(CHAT_COMPLETIONS_URL, ["a"], tmp_path / "out.jsonl", tmp_path / "err.jsonl")
    assert df["outcome"].to_list() == ["missing"]
    assert parse(CHAT_COMPLETIONS_URL, [], None, None).height == 0
    assert parse(EMBEDDINGS_URL, [], tmp_path / "out.jsonl", None).height == 0


def test_a_given_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="download it first"):
        parse_batch_results(url=CHAT_COMPLETIONS_URL, expected_custom_ids=["a"], output_path=tmp_path / "nope",
                            error_path=None, batch_status="completed")


def test_unicode_content_and_ids(tmp_path: Path) -> None:
    text = 'Ünïcödé ✓ 日本語 😀 "quoted" \\ back\nnew line'
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("ïd-1", text), chat_ok("id-2", "plain")])
    df = parse(CHAT_COMPLETIONS_URL, ["ïd-1", "id-2"], output, None)
    assert df["content"].to_list() == [text, "plain"]


def test_unexpected_ids_are_ignored_with_a_warning(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a"), chat_ok("stranger"), chat_ok("other")])
    with pytest.warns(ResultFileWarning, match="2 result line"):
        df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], output, None)
    assert df["outcome"].to_list() == ["succeeded", "missing"]


def test_success_wins_when_an_id_is_in_both_files(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a", "winner"), chat_ok("b")])
    error = write_jsonl(tmp_path / "err.jsonl", [http_error("a", 500), batch_error("b", "batch_expired")])
    df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], output, error, status="expired")
    assert df["outcome"].to_list() == ["succeeded", "succeeded"]
    assert df["content"].to_list() == ["winner", "ok"]


def test_malformed_lines_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "err.jsonl"
    path.write_text(
        json.dumps(chat_ok("a")) + "\n{not json\n"
        + json.dumps({"custom_id": "b", "response": {"status_code": 500, "body": "Internal error"}, "error": None})
        + "\n",
        encoding="utf-8",
    )
    with pytest.warns(ResultFileWarning, match="1 result line"):
        df = parse(CHAT_COMPLETIONS_URL, ["a", "b"], path, None)
    # a body of the wrong type loses the body, not the line
    assert df["outcome"].to_list() == ["succeeded", "http_error"]
    assert df["status_code"].to_list() == [200, 500]


def test_null_content_and_length_finish(tmp_path: Path) -> None:
    line = chat_ok("a", finish="length")
    line["response"]["body"]["choices"][0]["message"]["content"] = None
    df = parse(CHAT_COMPLETIONS_URL, ["a"], write_jsonl(tmp_path / "o.jsonl", [line]), None)
    assert df.row(0, named=True)["content"] is None
    assert df.row(0, named=True)["finish_reason"] == "length"


def test_expected_ids_as_series_and_validation(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [chat_ok("a")])
    df = parse_batch_results(url=CHAT_COMPLETIONS_URL, expected_custom_ids=pl.Series("whatever", ["a"]),
                             output_path=output, error_path=None, batch_status="completed")
    assert df["outcome"].to_list() == ["succeeded"]
    with pytest.raises(ValueError, match="unique"):
        parse(CHAT_COMPLETIONS_URL, ["a", "a"], output, None)
    twice = write_jsonl(tmp_path / "twice.jsonl", [chat_ok("a"), chat_ok("a")])
    with pytest.raises(ValueError, match="unique"):  # as many lines as ids, same ids: still refused
        parse(CHAT_COMPLETIONS_URL, ["a", "a"], twice, None)
    with pytest.raises(ValueError, match="not terminal"):
        parse(CHAT_COMPLETIONS_URL, ["a"], output, None, status="in_progress")
    with pytest.raises(ValueError, match="unsupported batch endpoint"):
        parse("/v1/moderations", ["a"], output, None)


def test_usage_totals_per_model(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [
        chat_ok("a", model="m1", prompt=10, completion=1), chat_ok("b", model="m1", prompt=20, completion=2),
        chat_ok("c", model="m2", prompt=5, completion=7),
    ])
    error = write_jsonl(tmp_path / "err.jsonl", [http_error("d", 429), batch_error("e", "batch_expired")])
    df = parse(CHAT_COMPLETIONS_URL, list("abcdef"), output, error, status="expired")

    assert df.sort("custom_id")["outcome"].to_list() == ["succeeded"] * 3 + ["http_error", "expired", "expired"]
    usage = usage_totals(df)
    assert usage.schema == USAGE_SCHEMA
    assert usage.rows() == [("m1", 2, 30, 3, 0, 0), ("m2", 1, 5, 7, 0, 0)]
    assert usage_totals(df.clear()).schema == USAGE_SCHEMA


def test_cached_and_reasoning_tokens_are_read_and_summed(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [
        chat_ok("a", model="o4-mini", prompt=2_000, completion=700, cached=1_024, reasoning=640),
        chat_ok("b", model="o4-mini", prompt=1_500, completion=300, cached=0, reasoning=256),
        chat_ok("c", model="o4-mini", prompt=100, completion=5),  # details absent: null, not 0
    ])
    rows = by_id(parse(CHAT_COMPLETIONS_URL, ["a", "b", "c", "d"], output, None))

    assert (rows["a"]["cached_tokens"], rows["a"]["reasoning_tokens"]) == (1_024, 640)
    assert (rows["b"]["cached_tokens"], rows["b"]["reasoning_tokens"]) == (0, 256)
    assert (rows["c"]["cached_tokens"], rows["c"]["reasoning_tokens"]) == (None, None)
    assert rows["d"]["outcome"] == "missing" and rows["d"]["cached_tokens"] is None
    # totals over succeeded rows; cached/reasoning stay inside prompt/completion, never added to them
    assert usage_totals(pl.DataFrame(list(rows.values()), schema=RESULT_SCHEMA)).rows() == [
        ("o4-mini", 3, 3_600, 1_005, 1_024, 896)]


def test_one_row_per_id_with_repeats_strangers_and_gaps_together(tmp_path: Path) -> None:
    output = write_jsonl(tmp_path / "out.jsonl", [
        chat_ok("a"), chat_ok("stranger"), http_error("b", 500), chat_ok("b", "second try"), chat_ok("c"),
    ])
    error = write_jsonl(tmp_path / "err.jsonl", [http_error("c", 503), http_error("d", 404, "not_found")])
    with pytest.warns(ResultFileWarning, match="not expected"):
        df = parse(CHAT_COMPLETIONS_URL, ["a", "b", "c", "d", "e"], output, error)
    assert df["outcome"].to_list() == ["succeeded", "succeeded", "succeeded", "http_error", "missing"]
    assert df["content"].to_list()[:3] == ["ok", "second try", "ok"]
    assert df["status_code"].to_list()[3] == 404


# ---------------------------------------------------------------- several batches in one read


def test_batches_read_together_keep_each_line_with_its_own_batch(tmp_path: Path) -> None:
    # The same custom_id in two batches (e.g. two plans' files), a bad line, a missing line and an error file:
    # each batch gets exactly its own rows, as if parsed alone.
    first_out = write_jsonl(tmp_path / "a_out.jsonl", [chat_ok("x", "first"), chat_ok("y", "first")])
    with first_out.open("a") as fh:
        fh.write("not json\n")
    second_out = write_jsonl(tmp_path / "b_out.jsonl", [chat_ok("x", "second")])
    second_err = write_jsonl(tmp_path / "b_err.jsonl", [http_error("z", 429)])
    third_err = write_jsonl(tmp_path / "c_err.jsonl", [batch_error("w", "batch_expired")])
    batches = [
        BatchResultFiles(["x", "y"], first_out, None, "completed"),
        BatchResultFiles(["x", "z", "v"], second_out, second_err, "completed"),
        BatchResultFiles(["w"], None, third_err, "expired"),
        BatchResultFiles(["u"], None, None, "failed", "token_limit_exceeded", "too many tokens"),
    ]
    with pytest.warns(ResultFileWarning, match="1 result line"):
        parsed = parse_batches_results(url=CHAT_COMPLETIONS_URL, batches=batches)
    rows = [{r["custom_id"]: (r["outcome"], r["content"], r["error_code"]) for r in frame.iter_rows(named=True)}
            for frame in parsed]
    assert all(frame.schema == RESULT_SCHEMA for frame in parsed)
    assert rows[0] == {"x": ("succeeded", "first", None), "y": ("succeeded", "first", None)}
    assert rows[1] == {"x": ("succeeded", "second", None), "z": ("http_error", None, "rate_limit_exceeded"),
                       "v": ("missing", None, MISSING_RESULT_CODE)}
    assert rows[2] == {"w": ("expired", None, "batch_expired")}
    assert rows[3] == {"u": ("missing", None, "token_limit_exceeded")}
    # the same as each batch parsed alone
    for batch, frame in zip(batches, parsed, strict=True):
        with pytest.warns(ResultFileWarning) if batch.output_path == first_out else _no_warning():
            alone = parse_batch_results(url=CHAT_COMPLETIONS_URL, expected_custom_ids=batch.expected_custom_ids,
                                        output_path=batch.output_path, error_path=batch.error_path,
                                        batch_status=batch.batch_status, batch_error_code=batch.batch_error_code,
                                        batch_error_message=batch.batch_error_message)
        assert alone.sort("custom_id").equals(frame.sort("custom_id"))


def test_one_file_given_to_two_batches_is_refused(tmp_path: Path) -> None:
    out = write_jsonl(tmp_path / "out.jsonl", [chat_ok("x")])
    with pytest.raises(ValueError, match="files of their own"):
        parse_batches_results(url=CHAT_COMPLETIONS_URL, batches=[
            BatchResultFiles(["x"], out, None, "completed"), BatchResultFiles(["x"], out, None, "completed")])


@contextlib.contextmanager
def _no_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultFileWarning)
        yield

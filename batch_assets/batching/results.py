"""Parse a batch's output and error files into one typed outcome row per submitted item.

The files are read by DuckDB's JSON reader with explicit column types (no inference, no
``json.loads`` loop): it streams the files in chunks on all cores, extracts only the fields below
and hands the flat result to polars through the Arrow C stream interface; the id checks then run
on the key column only (benchmarks/bench_results_parse.py: 1M chat lines in ~0.9 s on 2 cores,
13x a json.loads loop). Memory is the result table plus DuckDB's read buffers, not the file:
50,000 x 1536-float embedding lines (1.6 GB of JSON) peak at ~0.7 GB RSS, of which 0.3 GB is the
embedding column itself.

Rules (one row per expected ``custom_id``; rows are in no particular order, like the result files
themselves: join on ``custom_id``):

- ``response.status_code`` 2xx -> ``succeeded``; any other status -> ``http_error`` (whichever file
  the line is in); ``response: null`` with ``error.code`` ``batch_expired`` / ``batch_cancelled``
  -> ``expired`` / ``cancelled``; any other non-HTTP error -> ``missing`` with its code kept.
- An expected id with no line in either file is labelled by the batch's status: ``expired`` /
  ``cancelled`` batches -> ``expired`` / ``cancelled`` (the batch stopped before the request ran;
  OpenAI normally writes such lines itself); ``completed`` -> ``missing`` (``missing_result``);
  ``failed`` -> ``missing`` with the batch's error code (e.g. ``token_limit_exceeded``) or
  ``batch_failed``. All of these are retryable outcomes.
- An id in more than one line (should not happen) keeps its best line: success wins.
- Lines whose ``custom_id`` was not expected are ignored and reported with a
  ``ResultFileWarning``, as are lines that are not JSON objects (those are dropped: their item,
  if expected, ends ``missing``). A line whose fields have unexpected types keeps the fields it can.
- Embeddings must have been requested with the default ``encoding_format="float"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from batch_assets.batching.protocol import (
    BATCH_CANCELLED_CODE,
    BATCH_EXPIRED_CODE,
    CHAT_COMPLETIONS_URL,
    COMPLETIONS_URL,
    EMBEDDINGS_URL,
    RESPONSES_URL,
    SUPPORTED_URLS,
    TERMINAL_BATCH_STATUSES,
    BatchStatus,
    Outcome,
)

__all__ = [
    "BATCH_FAILED_CODE",
    "MISSING_RESULT_CODE",
    "BatchResultFiles",
    "RESULT_SCHEMA",
    "USAGE_SCHEMA",
    "ResultFileWarning",
    "parse_batch_results",
    "parse_batches_results",
    "result_line_columns",
    "usage_totals",
]

RESULT_SCHEMA = pl.Schema(
    {
        "custom_id": pl.String(),  # the request's custom_id; one row per expected id
        "outcome": pl.String(),  # a protocol.Outcome
        "status_code": pl.Int32(),  # HTTP status of the request; null for non-HTTP outcomes
        "error_code": pl.String(),  # error.code, else response body error.code/type; null on success
        "error_message": pl.String(),
        "response_model": pl.String(),  # the model that answered (body.model), succeeded rows
        "prompt_tokens": pl.Int64(),  # body.usage.prompt_tokens
        "completion_tokens": pl.Int64(),  # chat only; null for embeddings
        "cached_tokens": pl.Int64(),  # chat: usage.prompt_tokens_details.cached_tokens (part of prompt_tokens)
        "reasoning_tokens": pl.Int64(),  # chat: usage.completion_tokens_details.reasoning_tokens (part of completion)
        "finish_reason": pl.String(),  # chat: choices[0].finish_reason
        "content": pl.String(),  # chat: choices[0].message.content
        "embedding": pl.List(pl.Float32),  # embeddings: data[0].embedding
    }
)
# A cap on DuckDB's own buffers while reading result files (its default is 80% of the machine's memory); 256MB
# made a 1 GB file of vectors read 40% slower.
_READ_MEMORY_LIMIT = "512MB"
_READ_SCHEMA = pl.Schema({**RESULT_SCHEMA, "filename": pl.String()})  # what _read_lines returns
USAGE_SCHEMA = pl.Schema(
    {"response_model": pl.String, "n": pl.Int64, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
     "cached_tokens": pl.Int64, "reasoning_tokens": pl.Int64}
)

# Per-item error codes this module assigns (the Batch API's own are in protocol).
MISSING_RESULT_CODE = "missing_result"
BATCH_FAILED_CODE = "batch_failed"

_BODY_ERROR = "error STRUCT(message VARCHAR, type VARCHAR, code VARCHAR)"
# Per endpoint: the DuckDB type of a response body, and the RESULT_SCHEMA columns taken from it
# (the Responses API's input/output tokens fill prompt/completion_tokens, its text `content`).
_BODY_TYPES = {
    CHAT_COMPLETIONS_URL: "STRUCT(model VARCHAR, choices STRUCT(message STRUCT(content VARCHAR), "
    "finish_reason VARCHAR)[], usage STRUCT(prompt_tokens BIGINT, completion_tokens BIGINT, "
    "prompt_tokens_details STRUCT(cached_tokens BIGINT), completion_tokens_details STRUCT(reasoning_tokens BIGINT)), "
    f"{_BODY_ERROR})",
    EMBEDDINGS_URL: "STRUCT(model VARCHAR, data STRUCT(embedding FLOAT[])[], "
    f"usage STRUCT(prompt_tokens BIGINT), {_BODY_ERROR})",
    RESPONSES_URL: "STRUCT(model VARCHAR, status VARCHAR, incomplete_details STRUCT(reason VARCHAR), "
    "output STRUCT(type VARCHAR, content STRUCT(type VARCHAR, text VARCHAR)[])[], "
    "usage STRUCT(input_tokens BIGINT, output_tokens BIGINT, input_tokens_details STRUCT(cached_tokens BIGINT), "
    f"output_tokens_details STRUCT(reasoning_tokens BIGINT)), {_BODY_ERROR})",
    COMPLETIONS_URL: "STRUCT(model VARCHAR, choices STRUCT(text VARCHAR, finish_reason VARCHAR)[], "
    "usage STRUCT(prompt_tokens BIGINT, completion_tokens BIGINT, prompt_tokens_details STRUCT(cached_tokens "
    f"BIGINT)), {_BODY_ERROR})",
}
_ENDPOINT_FIELDS = {
    CHAT_COMPLETIONS_URL: """
        response.body.usage.prompt_tokens AS prompt_tokens,
        response.body.usage.completion_tokens AS completion_tokens,
        response.body.usage.prompt_tokens_details.cached_tokens AS cached_tokens,
        response.body.usage.completion_tokens_details.reasoning_tokens AS reasoning_tokens,
        response.body.choices[1].finish_reason AS finish_reason,
        response.body.choices[1].message.content AS content,
        NULL::FLOAT[] AS embedding""",
    EMBEDDINGS_URL: """
        response.body.usage.prompt_tokens AS prompt_tokens,
        NULL::BIGINT AS completion_tokens,
        NULL::BIGINT AS cached_tokens,
        NULL::BIGINT AS reasoning_tokens,
        NULL::VARCHAR AS finish_reason,
        NULL::VARCHAR AS content,
        response.body.data[1].embedding AS embedding""",
    # A Response's text is every output_text part of its message items, in order (what the SDKs'
    # `output_text` joins). Its status maps onto chat's finish reasons: completed -> stop,
    # incomplete for max_output_tokens -> length.
    RESPONSES_URL: """
        response.body.usage.input_tokens AS prompt_tokens,
        response.body.usage.output_tokens AS completion_tokens,
        response.body.usage.input_tokens_details.cached_tokens AS cached_tokens,
        response.body.usage.output_tokens_details.reasoning_tokens AS reasoning_tokens,
        CASE response.body.status
            WHEN 'completed' THEN 'stop'
            WHEN 'incomplete' THEN CASE response.body.incomplete_details.reason
                WHEN 'max_output_tokens' THEN 'length' ELSE response.body.incomplete_details.reason END
            ELSE response.body.status
        END AS finish_reason,
        array_to_string(flatten(list_transform(
            list_filter(response.body.output, lambda item: item.type = 'message'),
            lambda item: list_transform(list_filter(item.content, lambda part: part.type = 'output_text'),
                                        lambda part: part.text)
        )), '') AS content,
        NULL::FLOAT[] AS embedding""",
    COMPLETIONS_URL: """
        response.body.usage.prompt_tokens AS prompt_tokens,
        response.body.usage.completion_tokens AS completion_tokens,
        response.body.usage.prompt_tokens_details.cached_tokens AS cached_tokens,
        NULL::BIGINT AS reasoning_tokens,
        response.body.choices[1].finish_reason AS finish_reason,
        response.body.choices[1].text AS content,
        NULL::FLOAT[] AS embedding""",
}
# When an id has several lines (should not happen), the lowest rank wins, in Outcome's order: a success beats a
# failure.
_RANK = {outcome.value: rank for rank, outcome in enumerate(Outcome)}


class ResultFileWarning(UserWarning):
    """Result lines that were ignored: unexpected custom_ids or lines that are not JSON objects."""


def result_line_columns(url: str) -> str:
    """The ``columns`` DuckDB's ``read_json`` is given for result lines of ``url``: only the fields a row takes."""
    return ("{custom_id: 'VARCHAR', "
            f"response: 'STRUCT(status_code INTEGER, body {_BODY_TYPES[url]})', "
            "error: 'STRUCT(code VARCHAR, message VARCHAR)'}")


def _read_lines(url: str, paths: list[Path]) -> pl.DataFrame:
    """One flat row per result line of ``paths``, classified, with the ``filename`` it came from (as given);
    ``custom_id`` null for unreadable lines."""
    columns = result_line_columns(url)
    query = f"""
        SELECT custom_id,
            CASE
                WHEN response.status_code BETWEEN 200 AND 299 THEN 'succeeded'
                WHEN response.status_code IS NOT NULL THEN 'http_error'
                WHEN error.code = $expired THEN 'expired'
                WHEN error.code = $cancelled THEN 'cancelled'
                ELSE 'missing'
            END AS outcome,
            response.status_code AS status_code,
            coalesce(error.code, response.body.error.code, response.body.error.type) AS error_code,
            coalesce(error.message, response.body.error.message) AS error_message,
            response.body.model AS response_model,
            {_ENDPOINT_FIELDS[url]}
            , filename
        FROM read_json($paths, format='newline_delimited', ignore_errors=true, filename=true, columns={columns})
    """
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = false")  # rows are matched by custom_id anyway
        con.execute("SET enable_progress_bar = false")  # it would print into run logs on big files
        con.execute(f"SET memory_limit = '{_READ_MEMORY_LIMIT}'")
        relation = con.sql(
            query,
            params={
                "paths": [str(p) for p in paths],
                "expired": BATCH_EXPIRED_CODE,
                "cancelled": BATCH_CANCELLED_CODE,
            },
        )
        return pl.DataFrame(relation).cast(_READ_SCHEMA)  # a no-op unless DuckDB's types drift


def _expected_ids(expected_custom_ids: Sequence[str] | pl.Series) -> pl.Series:
    ids = pl.Series("custom_id", expected_custom_ids, dtype=pl.String)
    if ids.null_count():
        raise ValueError("expected_custom_ids contains nulls")
    return ids


def _check_unique(ids: pl.Series) -> None:
    if ids.n_unique() != ids.len():
        dupes = ids.filter(ids.is_duplicated()).unique().head(3).to_list()
        raise ValueError(f"expected_custom_ids must be unique (custom_id is unique per file): {dupes}")


def _same_unique_ids(ids: pl.Series, expected: pl.Series) -> bool:
    """True when ``ids`` is exactly the set ``expected`` (the usual case), checked with two sorts."""
    if ids.len() != expected.len():
        return False
    sorted_expected = expected.sort()
    if not (ids.sort() == sorted_expected).all():
        return False
    if expected.len() > 1 and (sorted_expected.slice(1) == sorted_expected.slice(0, expected.len() - 1)).any():
        _check_unique(expected)  # raises, naming the repeated ids
    return True


def _absent_label(batch_status: str, batch_error_code: str | None, batch_error_message: str | None
                  ) -> tuple[Outcome, str, str]:
    """(outcome, error_code, error_message) for an expected id with no result line."""
    if batch_status == BatchStatus.EXPIRED:
        return Outcome.EXPIRED, BATCH_EXPIRED_CODE, "the batch expired before this request ran"
    if batch_status == BatchStatus.CANCELLED:
        return Outcome.CANCELLED, BATCH_CANCELLED_CODE, "the batch was cancelled before this request ran"
    if batch_status == BatchStatus.FAILED:
        return (Outcome.MISSING, batch_error_code or BATCH_FAILED_CODE,
                batch_error_message or "the batch failed before running any request")
    return Outcome.MISSING, MISSING_RESULT_CODE, "no line for this custom_id in the batch's output or error file"


@dataclass(frozen=True)
class BatchResultFiles:
    """One ended batch's downloaded files and what was expected of it (see ``parse_batch_results``)."""

    expected_custom_ids: Sequence[str] | pl.Series
    output_path: Path | None
    error_path: Path | None
    batch_status: str
    batch_error_code: str | None = None
    batch_error_message: str | None = None

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in (self.output_path, self.error_path) if p is not None]


def parse_batch_results(
    *,
    url: str,
    expected_custom_ids: Sequence[str] | pl.Series,
    output_path: Path | None,
    error_path: Path | None,
    batch_status: str,
    batch_error_code: str | None = None,
    batch_error_message: str | None = None,
) -> pl.DataFrame:
    """One row per expected custom_id with ``RESULT_SCHEMA`` columns, in no particular order.

    ``url`` is the batch endpoint (one of ``protocol.SUPPORTED_URLS``). ``output_path``
    / ``error_path`` are the downloaded files, or None when the batch has none (e.g. every line
    failed: ``output_file_id`` is null). A path that is given must exist; an empty file is fine.
    ``batch_status`` must be terminal. For a ``failed`` batch, pass the first of ``batch.errors``
    as ``batch_error_code`` / ``batch_error_message``. See the module docstring for the rules.
    """
    return parse_batches_results(url=url, batches=[BatchResultFiles(
        expected_custom_ids, output_path, error_path, batch_status, batch_error_code, batch_error_message)])[0]


def parse_batches_results(*, url: str, batches: Sequence[BatchResultFiles]) -> list[pl.DataFrame]:
    """``parse_batch_results`` for several batches of one endpoint, their files read in one go (DuckDB parses
    them side by side on all cores: twenty 50,000-line files took half the time read together). One frame per
    batch, in order; each batch's lines count for that batch only."""
    if url not in SUPPORTED_URLS:
        raise ValueError(f"unsupported batch endpoint {url!r}: expected one of {', '.join(SUPPORTED_URLS)}")
    for batch in batches:
        if batch.batch_status not in TERMINAL_BATCH_STATUSES:
            raise ValueError(
                f"batch status {batch.batch_status!r} is not terminal: parse results only once the batch is "
                f"one of {', '.join(sorted(TERMINAL_BATCH_STATUSES))}"
            )
        for path in batch.paths:
            if not path.is_file():
                raise FileNotFoundError(f"result file {path} does not exist: download it first (or pass None)")
    paths = [path for batch in batches for path in batch.paths]
    if len({str(p) for p in paths}) != len(paths):
        raise ValueError("each batch's result files must be files of their own")
    read = _read_lines(url, paths) if paths else None
    if read is None:
        by_file: dict[str, pl.DataFrame] = {}
    elif len(paths) == 1:  # no regrouping (a month of vectors is one big file)
        by_file = {str(paths[0]): read.drop("filename")}
    else:
        by_file = {str(key[0]): frame for key, frame in read.partition_by(
            "filename", as_dict=True, include_key=False).items()}
    del read
    parsed = []
    for batch in batches:
        frames = [by_file.pop(str(p)) for p in batch.paths if str(p) in by_file]
        lines = (frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")) if frames \
            else RESULT_SCHEMA.to_frame()
        parsed.append(_settle(lines, batch))
    return parsed


def _settle(lines: pl.DataFrame, batch: BatchResultFiles) -> pl.DataFrame:
    """One batch's lines -> exactly one row per expected id (the module docstring's rules)."""
    expected = _expected_ids(batch.expected_custom_ids)
    # Set operations on the key column only: the wide rows are never reordered or gathered
    # unless something is off (repeated, unexpected or absent ids), which is what keeps this fast.
    unreadable = lines["custom_id"].null_count()
    if unreadable:
        lines = lines.filter(pl.col("custom_id").is_not_null())
        _warn(f"{unreadable} result line(s) in {', '.join(map(str, batch.paths))} are not JSON objects "
              "with a custom_id and were ignored")
    if _same_unique_ids(lines["custom_id"], expected):  # exactly one line per expected id
        return lines

    _check_unique(expected)
    if lines["custom_id"].n_unique() != lines.height:
        rank = pl.col("outcome").replace_strict(_RANK, return_dtype=pl.Int8)
        lines = lines.sort(rank, maintain_order=True).unique("custom_id", keep="first", maintain_order=True)
    # both sides are unique now, so the size of their union tells whether anything is unexpected
    n_unexpected = pl.concat([lines["custom_id"], expected]).n_unique() - expected.len()
    if n_unexpected:
        unexpected = lines.select("custom_id").join(expected.to_frame(), on="custom_id", how="anti")
        _warn(f"{n_unexpected} result line(s) have a custom_id that was not expected in this batch "
              f"and were ignored (e.g. {unexpected['custom_id'].head(3).to_list()})")
        lines = lines.join(expected.to_frame(), on="custom_id", how="semi")
    if lines.height == expected.len():  # unique, all expected, as many as expected: all are there
        return lines

    outcome, code, message = _absent_label(batch.batch_status, batch.batch_error_code, batch.batch_error_message)
    absent = expected.to_frame().join(lines.select("custom_id"), on="custom_id", how="anti")
    absent = absent.select(
        pl.col("custom_id") if name == "custom_id"
        else pl.lit({"outcome": outcome, "error_code": code, "error_message": message}.get(name), dtype)
        .alias(name)
        for name, dtype in RESULT_SCHEMA.items()
    )
    return pl.concat([lines, absent], how="vertical")


def _warn(message: str) -> None:
    warnings.warn(message, ResultFileWarning, stacklevel=3)


def usage_totals(df: pl.DataFrame) -> pl.DataFrame:
    """Tokens billed per ``response_model`` over succeeded rows (``USAGE_SCHEMA``), sorted by model.

    ``n`` is the number of succeeded requests; token nulls count as 0 (embeddings have no
    completion tokens, so theirs is 0). ``cached_tokens`` are part of ``prompt_tokens`` and
    ``reasoning_tokens`` part of ``completion_tokens``: price them with
    :func:`~batch_assets.batching.pricing.actual_cost`, which does not count them twice.
    """
    totals = (
        df.lazy()
        .filter(pl.col("outcome") == Outcome.SUCCEEDED)
        .group_by("response_model")
        .agg(
            pl.len().alias("n"),
            pl.col("prompt_tokens").sum(),
            pl.col("completion_tokens").sum(),
            pl.col("cached_tokens").sum(),
            pl.col("reasoning_tokens").sum(),
        )
        .sort("response_model", nulls_last=True)
        .collect()
    )
    return totals.select(pl.col(name).cast(dtype) for name, dtype in USAGE_SCHEMA.items())

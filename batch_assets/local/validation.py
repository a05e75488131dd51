"""Checks a batch input file line by line as OpenAI does, and counts its enqueued tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batch_assets.batching.protocol import (
    EMBEDDINGS_URL,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
)
from batch_assets.batching.tokens import count_request_tokens

MAX_REPORTED_ERRORS = 100


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every non-blank line."""
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line_no, raw


def validate_input(path: Path, endpoint: str) -> tuple[list[dict[str, Any]], int, str | None, str]:
    """Checks every line as OpenAI does. Returns (errors, request count, model, sha256 of the file)."""
    errors: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    models: set[str] = set()
    count = embedding_inputs = 0

    def err(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": line})

    if path.stat().st_size > MAX_FILE_BYTES:
        err("file_too_large", f"The input file is larger than the {MAX_FILE_BYTES} bytes a batch accepts.")
    for line_no, raw in iter_lines(path):
        count += 1
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            err("invalid_json_line", "This line is not parseable as valid JSON.", line_no)
            continue
        if not isinstance(line, dict):
            err("invalid_json_line", "Each line must be a JSON object.", line_no)
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            err("missing_required_parameter", "Missing required parameter: 'custom_id'.", line_no, "custom_id")
        elif custom_id in seen_ids:
            err("duplicate_custom_id", f"The custom_id '{custom_id}' appears more than once.", line_no, "custom_id")
        else:
            seen_ids.add(custom_id)
        if line.get("method") != "POST":
            err("invalid_value", "The method must be 'POST'.", line_no, "method")
        if line.get("url") != endpoint:
            err("invalid_url", f"The url '{line.get('url')}' does not match the batch endpoint '{endpoint}'.",
                line_no, "url")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            err("missing_required_parameter", "Missing required parameter: 'body.model'.", line_no, "body.model")
            continue
        models.add(body["model"])
        if len(models) > 1:
            err("mismatched_model", "All requests in a batch must use the same model; found "
                f"{sorted(models)}.", line_no, "body.model")
            models = {sorted(models)[0]}
        if endpoint == EMBEDDINGS_URL:
            raw_input = body.get("input")
            embedding_inputs += len(raw_input) if isinstance(raw_input, list) else 1
    if count == 0:
        err("empty_file", "The input file has no requests.")
    if count > MAX_REQUESTS_PER_FILE:
        err("too_many_requests", f"A batch holds at most {MAX_REQUESTS_PER_FILE} requests; this file has {count}.")
    if embedding_inputs > MAX_EMBEDDING_INPUTS_PER_BATCH:
        err("too_many_embedding_inputs", f"An embeddings batch holds at most {MAX_EMBEDDING_INPUTS_PER_BATCH} "
            f"inputs; this file has {embedding_inputs}.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return errors[:MAX_REPORTED_ERRORS], count, (next(iter(models)) if models else None), digest


def file_input_tokens(path: Path, endpoint: str) -> tuple[str | None, int]:
    """(model, input tokens) of a batch input file, counted the way OpenAI counts enqueued tokens."""
    bodies = []
    for _, raw in iter_lines(path):
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("body"), dict) and line["body"].get("model"):
            bodies.append(line["body"])
    if not bodies:
        return None, 0
    try:
        return bodies[0]["model"], sum(count_request_tokens(endpoint, bodies))
    except ValueError:  # lines validation will refuse anyway
        return bodies[0]["model"], 0

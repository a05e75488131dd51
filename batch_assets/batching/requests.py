"""Batch request lines: custom ids, request bodies (embeddings, chat completions, Responses),
structured-output formats.

A Batch API input line is ``{"custom_id", "method": "POST", "url", "body"}``; results come back in
any order and are joined on ``custom_id``, so it must be unique per file and map back to an item.

custom_id rule (:func:`custom_ids_for`), for ``s = prefix + item_id``:

* if ``s`` is 1..63 characters of ``[A-Za-z0-9_-]`` it is used as is (readable);
* otherwise the id is exactly 64 characters: a sanitized head of ``s`` (up to 31 characters,
  every other character replaced by ``_``), ``-``, then the hex sha256 of ``s`` filling the rest
  (at least 32 hex characters = 128 bits).

Kept ids are at most 63 characters and hashed ids exactly 64, so a kept id never equals a hashed
one; two kept ids differ because their strings do; two hashed ids differ unless sha256 collides.
So distinct ``item_id`` values (for one prefix) always get distinct custom ids, valid for every
provider (OpenAI caps custom_id at 64 characters; the charset is safe for Azure and others).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import polars as pl

from batch_assets.batching.protocol import CUSTOM_ID_MAX_LEN

_KEEP_MAX_LEN: Final = CUSTOM_ID_MAX_LEN - 1  # 63: hashed ids are exactly 64
_HEAD_LEN: Final = 31
_CUSTOM_ID_CHARS: Final = "A-Za-z0-9_-"
_KEEP_RE: Final = re.compile(rf"[{_CUSTOM_ID_CHARS}]{{1,{_KEEP_MAX_LEN}}}")
_INVALID_CHAR_RE: Final = re.compile(rf"[^{_CUSTOM_ID_CHARS}]")
_SCHEMA_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

CHAT_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})
# Roles of a Responses API input message (EasyInputMessage in OpenAI's OpenAPI spec).
RESPONSES_ROLES: Final = frozenset({"system", "developer", "user", "assistant"})
# Responses API: `max_output_tokens` has a minimum of 16 in OpenAI's OpenAPI spec (CreateResponse).
MIN_MAX_OUTPUT_TOKENS: Final = 16
# OpenAI: at most 2048 inputs in one embeddings request.
MAX_INPUTS_PER_EMBEDDING_REQUEST: Final = 2048
# Reasoning models reject `max_tokens` (they take `max_completion_tokens`) and any temperature but 1.
_REASONING_PREFIXES: Final = ("o1", "o3", "o4", "gpt-5")


def _hashed_custom_id(s: str) -> str:
    head = _INVALID_CHAR_RE.sub("_", s[:_HEAD_LEN])
    digest = hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{head}-{digest[: CUSTOM_ID_MAX_LEN - len(head) - 1]}"


def _check_prefix(prefix: str) -> None:
    if prefix and not _KEEP_RE.fullmatch(prefix):
        raise ValueError(f"custom_id prefix {prefix!r} must be 1-63 characters of [A-Za-z0-9_-]")


def custom_ids_for(item_ids: Iterable[str] | pl.Series, prefix: str = "") -> list[str]:
    """Provider-safe custom ids for ``prefix + item_id`` (rule in the module docstring), checked vectorised in
    polars."""
    _check_prefix(prefix)
    series = item_ids if isinstance(item_ids, pl.Series) else pl.Series(list(item_ids), dtype=pl.String)
    if series.dtype != pl.String:
        raise ValueError(f"item ids must be strings, got {series.dtype}")
    if series.null_count() or (series.str.len_chars() == 0).any():
        raise ValueError("item ids must be non-empty strings (found null or empty)")
    full = (prefix + series) if prefix else series
    keep = full.str.contains(rf"^[{_CUSTOM_ID_CHARS}]{{1,{_KEEP_MAX_LEN}}}$")
    if not prefix and keep.all() and isinstance(item_ids, list):
        return list(item_ids)  # the same strings: a month of ids is not held twice (~65 MB per million)
    ids = full.to_list()
    if not keep.all():
        for i in (~keep).arg_true().to_list():
            ids[i] = _hashed_custom_id(ids[i])
    return ids


def _check_model(model: str) -> None:
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")


def embedding_body(model: str, text: str | Sequence[str], dimensions: int | None = None) -> dict[str, Any]:
    """``/v1/embeddings`` body for one text (or up to 2048 texts in one request)."""
    _check_model(model)
    if isinstance(text, str):
        if not text:
            raise ValueError(
                "embedding input is empty: OpenAI rejects empty strings (400); "
                "drop or replace empty documents before building requests"
            )
    elif isinstance(text, Sequence) and text:
        if len(text) > MAX_INPUTS_PER_EMBEDDING_REQUEST:
            raise ValueError(
                f"{len(text)} inputs in one embeddings request; OpenAI allows at most "
                f"{MAX_INPUTS_PER_EMBEDDING_REQUEST}: split them over several requests"
            )
        for i, t in enumerate(text):
            if not isinstance(t, str) or not t:
                raise ValueError(
                    f"embedding input {i} is empty or not a string: OpenAI rejects empty strings (400)"
                )
        text = list(text)
    else:
        raise ValueError(f"embedding input must be a non-empty str or list of str, got {text!r:.80}")
    body: dict[str, Any] = {"model": model, "input": text}
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError(f"dimensions must be a positive int, got {dimensions!r}")
        body["dimensions"] = dimensions
    return body


def _is_reasoning_model(model: str) -> bool:
    return model.lower().startswith(_REASONING_PREFIXES) and not model.lower().startswith("gpt-5-chat")


def _check_temperature(model: str, temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise ValueError(f"temperature must be in [0, 2], got {temperature!r}")
    if _is_reasoning_model(model) and temperature != 1:
        raise ValueError(f"{model} only supports the default temperature (1); leave it unset")


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ValueError(f"message {i} must be a dict, got {type(m).__name__}")
        if m.get("role") not in CHAT_ROLES:
            raise ValueError(f"message {i} has role {m.get('role')!r}; expected one of {sorted(CHAT_ROLES)}")
        if "content" not in m:
            raise ValueError(f"message {i} has no 'content'")
        out.append(dict(m))
    return out


def chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int | None = None,
    max_completion_tokens: int | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    response_format: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``/v1/chat/completions`` body. Only parameters that are set are written.

    ``max_tokens`` is the classic cap; reasoning models (o1/o3/o4/gpt-5) reject it and take
    ``max_completion_tokens`` (also accepted by current non-reasoning OpenAI models), and reject
    any temperature but 1: those combinations raise here instead of failing every line at OpenAI.
    """
    _check_model(model)
    body: dict[str, Any] = {"model": model, "messages": _check_messages(messages)}
    if max_tokens is not None and max_completion_tokens is not None:
        raise ValueError("pass max_tokens or max_completion_tokens, not both")
    reasoning = _is_reasoning_model(model)
    for key, value in (("max_tokens", max_tokens), ("max_completion_tokens", max_completion_tokens)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive int, got {value!r}")
        if key == "max_tokens" and reasoning:
            raise ValueError(f"{model} rejects max_tokens: pass max_completion_tokens={value} instead")
        body[key] = value
    if temperature is not None:
        _check_temperature(model, temperature)
        body["temperature"] = temperature
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        body["seed"] = seed
    if response_format is not None:
        if not isinstance(response_format, Mapping) or "type" not in response_format:
            raise ValueError("response_format must be a dict with a 'type' (see json_schema_response_format)")
        body["response_format"] = dict(response_format)
    return body


def _responses_input(input_: str | Sequence[Mapping[str, Any]]) -> str | list[dict[str, Any]]:
    """A Responses ``input``: a non-empty text, or a non-empty list of ``{role, content}`` messages
    whose content is a text or a list of ``input_text`` / ``output_text`` parts."""
    if isinstance(input_, str):
        if not input_:
            raise ValueError("input is empty: pass a non-empty text or a list of messages")
        return input_
    if isinstance(input_, bytes) or not isinstance(input_, Sequence) or not input_:
        raise ValueError("input must be a non-empty str or a non-empty list of {'role', 'content'} dicts")
    out = []
    for i, m in enumerate(input_):
        if not isinstance(m, Mapping):
            raise ValueError(f"input message {i} must be a dict, got {type(m).__name__}")
        if m.get("role") not in RESPONSES_ROLES:
            raise ValueError(f"input message {i} has role {m.get('role')!r}; expected one of {sorted(RESPONSES_ROLES)}")
        content = m.get("content")
        parts_ok = isinstance(content, list) and content and all(
            isinstance(p, Mapping) and p.get("type") in ("input_text", "output_text") and isinstance(p.get("text"), str)
            for p in content
        )
        if not (isinstance(content, str) or parts_ok):
            raise ValueError(f"input message {i} needs 'content': a str or a list of "
                             "{'type': 'input_text', 'text': str} parts")
        out.append(dict(m))
    return out


def responses_body(
    model: str,
    input: str | Sequence[Mapping[str, Any]],  # the Responses API's own name
    *,
    instructions: str | None = None,
    max_output_tokens: int | None = None,
    temperature: float | None = None,
    text_format: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``/v1/responses`` body. Only parameters that are set are written.

    ``input`` is a text (one user message) or a list of ``{role, content}`` messages;
    ``instructions`` is the system/developer message. ``max_output_tokens`` is at least 16 (OpenAI
    refuses less) and covers reasoning tokens too. ``text_format`` is ``text.format``, e.g.
    :func:`json_schema_text_format`. The Responses API has no ``seed``.
    """
    _check_model(model)
    body: dict[str, Any] = {"model": model, "input": _responses_input(input)}
    if instructions is not None:
        if not isinstance(instructions, str) or not instructions:
            raise ValueError(f"instructions must be a non-empty str, got {instructions!r:.80}")
        body["instructions"] = instructions
    if max_output_tokens is not None:
        if isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int) \
                or max_output_tokens < MIN_MAX_OUTPUT_TOKENS:
            raise ValueError(f"max_output_tokens must be an int >= {MIN_MAX_OUTPUT_TOKENS} (OpenAI refuses less), "
                             f"got {max_output_tokens!r}")
        body["max_output_tokens"] = max_output_tokens
    if temperature is not None:
        _check_temperature(model, temperature)
        body["temperature"] = temperature
    if text_format is not None:
        kind = text_format.get("type") if isinstance(text_format, Mapping) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError("text_format must be a dict with a 'type' of text, json_object or json_schema "
                             "(see json_schema_text_format)")
        named = _SCHEMA_NAME_RE.fullmatch(str(text_format.get("name", "")))
        if kind == "json_schema" and not (named and isinstance(text_format.get("schema"), Mapping)):
            raise ValueError("a json_schema text_format needs a 'name' and a 'schema' (see json_schema_text_format)")
        body["text"] = {"format": dict(text_format)}
    return body


def json_schema_response_format(name: str, schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """``response_format`` for structured outputs with a JSON schema (strict by default)."""
    if not isinstance(name, str) or not _SCHEMA_NAME_RE.fullmatch(name):
        raise ValueError(f"schema name {name!r} must be 1-64 characters of [A-Za-z0-9_-]")
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise ValueError("a structured-output schema must be a JSON schema with type 'object' at the root")
    return {"type": "json_schema", "json_schema": {"name": name, "schema": dict(schema), "strict": strict}}


def json_schema_text_format(name: str, schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Responses API ``text.format`` for structured outputs (the same schema rules as
    :func:`json_schema_response_format`, flattened the way the Responses API takes them)."""
    spec = json_schema_response_format(name, schema, strict=strict)["json_schema"]
    return {"type": "json_schema", **spec}


def label_schema(labels: Sequence[str]) -> dict[str, Any]:
    """Schema for a classifier reply ``{"label": <one of labels>}`` (strict-mode compatible)."""
    if isinstance(labels, str) or not labels:
        raise ValueError("labels must be a non-empty list of strings")
    if not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"labels must be non-empty strings, got {list(labels)!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)!r}")
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }

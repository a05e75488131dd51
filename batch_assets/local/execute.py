"""Executes embeddings and chat request bodies on the local models, answering as OpenAI would.

Shared by the batch worker and the synchronous endpoints, so both give identical answers.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import defaultdict
from typing import Any

import numpy as np

from batch_assets.local.models import LocalModels

Answer = tuple[int, dict[str, Any]]  # HTTP status, response body


class InvalidRequest(ValueError):
    """A request body OpenAI would answer with 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def error_body(message: str, *, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _invalid(exc: InvalidRequest) -> Answer:
    return 400, error_body(str(exc), param=exc.param)


# -- embeddings ------------------------------------------------------------------------------------
def _embedding_inputs(body: dict[str, Any]) -> list[str]:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", "model")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'input' must be a non-empty string or a non-empty array of strings", "input")
    if not all(isinstance(text, str) for text in inputs):
        raise InvalidRequest("the local engine accepts text inputs only (no token arrays)", "input")
    if any(text == "" for text in inputs):
        raise InvalidRequest("'input' cannot contain an empty string", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be 'float' or 'base64'", "encoding_format")
    return inputs


def _dimensions(body: dict[str, Any], native_dims: int) -> int | None:
    dims = body.get("dimensions")
    if dims is None:
        return None
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= native_dims:
        raise InvalidRequest(f"dimensions must be an integer between 1 and {native_dims} for this model", "dimensions")
    return dims


def embed_many(models: LocalModels, bodies: list[dict[str, Any]]) -> list[Answer]:
    """Answers many embeddings requests, running their texts through the model in shared batches."""
    answers: list[Answer | None] = [None] * len(bodies)
    by_dims: dict[int | None, list[tuple[int, list[str]]]] = defaultdict(list)
    for index, body in enumerate(bodies):
        try:
            inputs = _embedding_inputs(body)
            by_dims[_dimensions(body, models.embedder.native_dims)].append((index, inputs))
        except InvalidRequest as exc:
            answers[index] = _invalid(exc)
    for dims, requests in by_dims.items():
        texts = [text for _, inputs in requests for text in inputs]
        try:
            output = models.embedder.embed(texts, dimensions=dims)
        except ValueError as exc:
            for index, _ in requests:
                answers[index] = (400, error_body(str(exc)))
            continue
        offset = 0
        for index, inputs in requests:
            vectors = output.vectors[offset:offset + len(inputs)]
            tokens = sum(output.prompt_tokens[offset:offset + len(inputs)])
            offset += len(inputs)
            as_base64 = bodies[index].get("encoding_format") == "base64"
            answers[index] = (200, {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": _encode_vector(vector, as_base64)}
                    for i, vector in enumerate(vectors)
                ],
                "model": output.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
    return [answer for answer in answers if answer is not None]


def _encode_vector(vector: np.ndarray, as_base64: bool) -> list[float] | str:
    if as_base64:
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector.astype(np.float32).tolist()


# -- chat ------------------------------------------------------------------------------------------
def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", "messages")
    cleaned = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant"):
            raise InvalidRequest(f"messages[{position}] needs a role of system, developer, user or assistant",
                                 f"messages[{position}].role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{position}].content must be a string", f"messages[{position}].content")
        role = "system" if message["role"] == "developer" else message["role"]
        cleaned.append({"role": role, "content": content})
    return cleaned


def _optional_number(body: dict[str, Any], name: str, kind: type, low: float, high: float) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number between {low} and {high}", name)
    return kind(value)


def chat_complete(models: LocalModels, body: dict[str, Any]) -> Answer:
    try:
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise InvalidRequest("you must provide a model parameter", "model")
        messages = _messages(body)
        max_tokens = _optional_number(body, "max_completion_tokens", int, 1, 1 << 20)
        if max_tokens is None:
            max_tokens = _optional_number(body, "max_tokens", int, 1, 1 << 20)
        temperature = _optional_number(body, "temperature", float, 0, 2)
        seed = _optional_number(body, "seed", int, -(1 << 63), (1 << 63) - 1)
        if body.get("n", 1) != 1:
            raise InvalidRequest("the local engine supports n=1 only", "n")
        response_format = body.get("response_format")
        if response_format is not None and (
            not isinstance(response_format, dict)
            or response_format.get("type") not in ("text", "json_object", "json_schema")
        ):
            raise InvalidRequest("response_format.type must be text, json_object or json_schema", "response_format")
        if response_format and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise InvalidRequest("response_format.json_schema.schema must be an object", "response_format")
    except InvalidRequest as exc:
        return _invalid(exc)
    try:
        output = models.chat.complete(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed, response_format=response_format,
        )
    except ValueError as exc:  # e.g. a prompt longer than the context, or a schema llama.cpp rejects
        return 400, error_body(str(exc))
    return 200, {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": output.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": output.content, "refusal": None},
            "logprobs": None,
            "finish_reason": output.finish_reason,
        }],
        "usage": {
            "prompt_tokens": output.prompt_tokens,
            "completion_tokens": output.completion_tokens,
            "total_tokens": output.prompt_tokens + output.completion_tokens,
        },
        "system_fingerprint": "local",
    }

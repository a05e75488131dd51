"""Executes request bodies on the local models, answering as OpenAI would.

Shared by the batch worker and the synchronous endpoints, so both give identical answers:
:func:`embed_many` for embeddings, :func:`answer_one` for every other endpoint (chat completions
run on the chat model; Responses and legacy completions are converted around it in
:mod:`batch_assets.local.endpoints`).
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import defaultdict
from typing import Any

import numpy as np

from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, COMPLETIONS_URL, RESPONSES_URL
from batch_assets.local import endpoints
from batch_assets.local.errors import (
    InvalidRequest,
    bounded_int,
    bounded_number,
    error_body,
    invalid_type,
    invalid_value,
    missing_parameter,
    unsupported_parameter,
)
from batch_assets.local.models import LocalModels

Answer = tuple[int, dict[str, Any]]  # HTTP status, response body

__all__ = ["Answer", "InvalidRequest", "answer_one", "answer_usage", "chat_complete", "embed_many", "embedding_order",
           "engine_failure", "error_body"]

CHAT_ROLES = ("system", "developer", "user", "assistant")


def _invalid(exc: InvalidRequest) -> Answer:
    return exc.status, exc.body()


def engine_failure(exc: BaseException) -> Answer:
    """A 500 for a request the model code failed on, so it fails alone instead of taking the batch
    (or the worker) down with it."""
    return 500, error_body(
        f"The local engine failed on this request ({type(exc).__name__}: {exc}). The other requests are not "
        "affected; sending it again fails the same way unless the request changes.",
        type_="server_error", code="engine_error")


def _require_model(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", "model")  # OpenAI's own words


# -- embeddings ------------------------------------------------------------------------------------
def _embedding_inputs(body: dict[str, Any]) -> list[str]:
    _require_model(body)
    if "input" not in body:
        raise missing_parameter("input")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest("'input' must be a non-empty string or a non-empty array of strings", "input")
    if not all(isinstance(text, str) for text in inputs):
        raise InvalidRequest("the local engine accepts text inputs only (no token arrays)", "input")
    if any(text == "" for text in inputs):
        raise InvalidRequest("'input' cannot contain an empty string", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise invalid_value("encoding_format", body["encoding_format"], ("float", "base64"))
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
        except Exception as exc:
            answers[index] = engine_failure(exc)
    for dims, requests in by_dims.items():
        texts = [text for _, inputs in requests for text in inputs]
        try:
            output = models.embedder.embed(texts, dimensions=dims)
        except ValueError as exc:
            for index, _ in requests:
                answers[index] = (400, error_body(str(exc)))
            continue
        except Exception as exc:
            if len(requests) == 1:
                answers[requests[0][0]] = engine_failure(exc)
                continue
            # Find the request the model fails on: every other one still gets its answer.
            for index, _ in requests:
                answers[index] = embed_many(models, [bodies[index]])[0]
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


def embedding_order(models: LocalModels, bodies: list[Any]) -> list[int]:
    """The order to run embeddings requests in: by token count, longest first, so a chunk's texts pad to about the
    same length (sorting by characters padded ~10% more tokens on the bundled reviews) and the last chunks, which
    one model thread may run while the other has nothing left, are the shortest. A request's longest text counts
    (its texts run in sorted runs of their own)."""
    texts = [_texts(body) for body in bodies]
    try:
        counts = models.embedder.token_counts([text for request in texts for text in request])
    except Exception:  # the model does not load: by characters; each request then fails on its own
        counts = [len(text) for request in texts for text in request]
    longest, offset = [], 0
    for request in texts:
        longest.append(max(counts[offset:offset + len(request)], default=0))
        offset += len(request)
    return sorted(range(len(bodies)), key=longest.__getitem__, reverse=True)


def _texts(body: Any) -> list[str]:
    raw = body.get("input") if isinstance(body, dict) else None
    if isinstance(raw, str):
        return [raw]
    return [text for text in raw if isinstance(text, str)] if isinstance(raw, list) else []


def _encode_vector(vector: np.ndarray, as_base64: bool) -> list[float] | str:
    if as_base64:
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector.astype(np.float32).tolist()


# -- chat ------------------------------------------------------------------------------------------
def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    if "messages" not in body:
        raise missing_parameter("messages")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array of objects", messages)
    if not messages:
        raise InvalidRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                             "empty array instead.", "messages", "empty_array")
    cleaned = []
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, dict):
            raise invalid_type(where, "an object", message)
        if message.get("role") not in CHAT_ROLES:
            if "role" not in message:
                raise missing_parameter(f"{where}.role")
            raise invalid_value(f"{where}.role", message["role"], CHAT_ROLES,
                                " (the local engine runs no tools, so no 'tool' messages)")
        content = message.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(_part_text(part, f"{where}.content[{i}]") for i, part in enumerate(content))
        if not isinstance(content, str):
            raise invalid_type(f"{where}.content", "one of a string or array of objects", content)
        role = "system" if message["role"] == "developer" else message["role"]
        cleaned.append({"role": role, "content": content})
    return cleaned


def _part_text(part: Any, where: str) -> str:
    if not isinstance(part, dict):
        raise invalid_type(where, "an object", part)
    text = part.get("text", "")
    if not isinstance(text, str):
        raise invalid_type(f"{where}.text", "a string", text)
    return text


def _response_format(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format")
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise invalid_type("response_format", "an object", response_format)
    if response_format.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid_value("response_format.type", response_format.get("type"), ("text", "json_object", "json_schema"))
    if response_format["type"] == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise missing_parameter("response_format.json_schema")
        if not isinstance(spec.get("schema"), dict):
            raise InvalidRequest("The local engine needs 'response_format.json_schema.schema' (a JSON schema object).",
                                 "response_format.json_schema.schema")
    return response_format


def chat_complete(models: LocalModels, body: dict[str, Any]) -> Answer:
    """Answers one chat request; never raises: a bad request is a 400, a model failure a 500."""
    try:
        _require_model(body)
        messages = _messages(body)
        max_tokens = bounded_int(body, "max_completion_tokens", 1)
        if max_tokens is None:
            max_tokens = bounded_int(body, "max_tokens", 1)
        temperature = bounded_number(body, "temperature", 0, 2)
        seed = bounded_int(body, "seed", -(1 << 63), (1 << 63) - 1)
        if body.get("n", 1) != 1:
            raise unsupported_parameter("n", "it answers one choice per request (n=1).")
        if body.get("tools"):
            raise unsupported_parameter("tools", "the local chat model runs no tools.")
        response_format = _response_format(body)
    except InvalidRequest as exc:
        return _invalid(exc)
    except Exception as exc:  # a shape the checks above did not foresee
        return engine_failure(exc)
    try:
        output = models.chat.complete(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed, response_format=response_format,
        )
    except ValueError as exc:  # e.g. a prompt longer than the context, or a schema llama.cpp rejects
        return 400, error_body(str(exc))
    except Exception as exc:
        return engine_failure(exc)
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


_CONVERSIONS = {
    RESPONSES_URL: (endpoints.responses_request_to_chat, endpoints.chat_answer_to_response),
    COMPLETIONS_URL: (endpoints.completions_request_to_chat, endpoints.chat_answer_to_completion),
}


def answer_one(models: LocalModels, endpoint: str, body: dict[str, Any]) -> Answer:
    """Answers one request for any endpoint but embeddings (those go through :func:`embed_many`,
    which batches texts across requests)."""
    if endpoint == CHAT_COMPLETIONS_URL:
        return chat_complete(models, body)
    if endpoint not in _CONVERSIONS:
        raise ValueError(f"answer_one does not run {endpoint!r}: embeddings go through embed_many")
    to_chat, from_chat = _CONVERSIONS[endpoint]
    try:
        chat_body = to_chat(body)
        status, answer = chat_complete(models, chat_body)
        return (status, from_chat(answer, body)) if status == 200 else (status, answer)
    except InvalidRequest as exc:
        return _invalid(exc)
    except Exception as exc:
        return engine_failure(exc)


def answer_usage(answer: Answer) -> tuple[int, int]:
    """(input, output) tokens of a successful answer of any endpoint, for the batch's ``usage``:
    chat, completions and embeddings say prompt/completion tokens, the Responses API input/output."""
    usage = answer[1].get("usage") or {}
    if "input_tokens" in usage:
        return usage["input_tokens"], usage.get("output_tokens", 0)
    return usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)

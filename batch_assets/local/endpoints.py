"""The Responses API, legacy completions and chat streaming, as conversions around the chat model.

The local chat model speaks chat completions. A ``/v1/responses`` or ``/v1/completions`` body is
checked the way OpenAI checks it and turned into the chat body the model runs; the chat answer is
turned back into OpenAI's object for that endpoint (shapes from OpenAI's OpenAPI spec: ``Response``,
``CreateCompletionResponse``, ``CreateChatCompletionStreamResponse``).

- Responses: ``instructions`` becomes the system message, ``input`` (a text, or a list of messages
  with text parts) the conversation, ``max_output_tokens`` the token cap (OpenAI's minimum is 16),
  ``text.format`` the structured-output format. An answer cut by the cap is ``status: incomplete``
  with ``incomplete_details.reason = max_output_tokens``, as on OpenAI. The local engine keeps no
  responses and runs no tools, so ``previous_response_id``, ``conversation`` and ``tools`` are refused.
- Completions: SmolLM2 is an instruction-tuned chat model, so the ``prompt`` runs as one user turn
  (the way gpt-3.5-turbo-instruct answers an instruction). ``max_tokens`` defaults to 16 like
  OpenAI's; ``stop`` cuts the text at the first stop sequence; ``echo``, ``suffix``, ``logprobs``
  and several prompts per request are refused.
- Streaming: the chat model answers in one piece, which is then sent as OpenAI's chunks
  (role, content, finish reason, optional usage) and ``data: [DONE]``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import orjson

from batch_assets.local.errors import (
    InvalidRequest,
    bounded_int,
    bounded_number,
    invalid_type,
    invalid_value,
    missing_parameter,
    unsupported_parameter,
)

# OpenAI's CreateResponse schema: max_output_tokens has a minimum of 16.
MIN_MAX_OUTPUT_TOKENS = 16
# OpenAI's CreateCompletionRequest: max_tokens defaults to 16.
DEFAULT_COMPLETION_MAX_TOKENS = 16
RESPONSE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text")
TEXT_FORMATS = ("text", "json_schema", "json_object")


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise missing_parameter("model")
    if not isinstance(model, str) or not model:
        raise invalid_type("model", "a string", model)
    return model


# -- Responses ----------------------------------------------------------------------------------------
def _input_messages(input_: Any) -> list[dict[str, str]]:
    if isinstance(input_, str):
        return [{"role": "user", "content": input_}]
    if not isinstance(input_, list):
        raise invalid_type("input", "one of a string or array of input items", input_)
    messages = []
    for i, item in enumerate(input_):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_type(where, "an object", item)
        kind = item.get("type", "message")
        if kind != "message":
            raise unsupported_parameter(f"{where}.type", f"it reads messages only, not '{kind}' items.")
        if "role" not in item:
            raise missing_parameter(f"{where}.role")
        if item["role"] not in RESPONSE_ROLES:
            raise invalid_value(f"{where}.role", item["role"], RESPONSE_ROLES)
        if "content" not in item:
            raise missing_parameter(f"{where}.content")
        content = item["content"]
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise invalid_type(f"{where}.content[{j}]", "an object", part)
                if part.get("type") not in TEXT_PARTS:
                    raise unsupported_parameter(f"{where}.content[{j}].type",
                                                f"it reads text only, not '{part.get('type')}' parts.")
                if not isinstance(part.get("text"), str):
                    raise invalid_type(f"{where}.content[{j}].text", "a string", part.get("text"))
                texts.append(part["text"])
            content = "".join(texts)
        elif not isinstance(content, str):
            raise invalid_type(f"{where}.content", "one of a string or array of input content items", content)
        messages.append({"role": item["role"], "content": content})
    if not messages:
        raise InvalidRequest("Invalid 'input': empty array. Expected an array with minimum length 1, but got an "
                             "empty array instead.", "input", "empty_array")
    return messages


def _text_format_to_response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid_type("text", "an object", text)
    text_format = text.get("format")
    if text_format is None:
        return None
    if not isinstance(text_format, dict):
        raise invalid_type("text.format", "an object", text_format)
    kind = text_format.get("type")
    if kind not in TEXT_FORMATS:
        raise invalid_value("text.format.type", kind, TEXT_FORMATS)
    if kind != "json_schema":
        return {"type": kind}
    for required in ("name", "schema"):
        if required not in text_format:
            raise missing_parameter(f"text.format.{required}")
    if not isinstance(text_format["schema"], dict):
        raise invalid_type("text.format.schema", "an object", text_format["schema"])
    spec = {key: text_format[key] for key in ("name", "schema", "strict", "description") if key in text_format}
    return {"type": "json_schema", "json_schema": spec}


def responses_request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/responses`` body -> the chat completions body the chat model runs (raises InvalidRequest)."""
    model = _require_model(body)
    for param, why in (("previous_response_id", "it keeps no responses; send the whole conversation as 'input'."),
                       ("conversation", "it keeps no conversations; send the whole conversation as 'input'."),
                       ("prompt", "it keeps no prompt templates; send 'instructions' and 'input'."),
                       ("background", "every local response runs to completion in the request.")):
        if body.get(param):
            raise unsupported_parameter(param, why)
    if body.get("tools"):
        raise unsupported_parameter("tools", "the local chat model runs no tools.")
    if "input" not in body:
        raise missing_parameter("input")
    messages = _input_messages(body["input"])
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid_type("instructions", "a string", instructions)
        messages.insert(0, {"role": "system", "content": instructions})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    max_output_tokens = bounded_int(body, "max_output_tokens", MIN_MAX_OUTPUT_TOKENS)
    if max_output_tokens is not None:
        chat["max_completion_tokens"] = max_output_tokens
    temperature = bounded_number(body, "temperature", 0, 2)
    if temperature is not None:
        chat["temperature"] = temperature
    response_format = _text_format_to_response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    return chat


def _chat_choice(chat: dict[str, Any]) -> tuple[str, str]:
    choice = chat["choices"][0]
    return choice["message"]["content"] or "", choice["finish_reason"]


def chat_answer_to_response(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion answer -> OpenAI's ``Response`` object for the request that asked for it."""
    text, finish_reason = _chat_choice(chat)
    complete = finish_reason != "length"
    usage = chat["usage"]
    text_format = (request.get("text") or {}).get("format") or {"type": "text"}
    return {
        "id": f"resp_{secrets.token_hex(24)}",
        "object": "response",
        "created_at": chat["created"],
        "status": "completed" if complete else "incomplete",
        "completed_at": chat["created"] if complete else None,
        "error": None,
        "incomplete_details": None if complete else {"reason": "max_output_tokens"},
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": chat["model"],
        "output": [{
            "type": "message",
            "id": f"msg_{secrets.token_hex(24)}",
            "status": "completed" if complete else "incomplete",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,  # the local engine keeps no responses
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text_format},
        "tool_choice": "auto",
        "tools": [],
        "top_p": request.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": usage["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": usage["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage["total_tokens"],
        },
        "user": None,
        "metadata": request.get("metadata") or {},
    }


# -- legacy completions ----------------------------------------------------------------------------------
def _prompt_text(body: dict[str, Any]) -> str:
    if "prompt" not in body:
        raise missing_parameter("prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list):
        raise unsupported_parameter("prompt", "it answers one text prompt per request (no lists of prompts and "
                                    "no token arrays); send one request per prompt.")
    if not isinstance(prompt, str):
        raise invalid_type("prompt", "one of a string or array", prompt)
    return prompt


def _stop_sequences(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise invalid_type("stop", "one of a string or an array of up to 4 strings", stop)
    return stops


def completions_request_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/completions`` body -> the chat completions body the chat model runs (raises InvalidRequest)."""
    model = _require_model(body)
    prompt = _prompt_text(body)
    for param in ("echo", "suffix", "logprobs"):
        if body.get(param):
            raise unsupported_parameter(param, "it returns the completion text only.")
    for param in ("n", "best_of"):
        if body.get(param, 1) != 1:
            raise unsupported_parameter(param, "it answers one choice per request.")
    _stop_sequences(body)
    max_tokens = bounded_int(body, "max_tokens", 1)
    chat: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": DEFAULT_COMPLETION_MAX_TOKENS if max_tokens is None else max_tokens}
    temperature = bounded_number(body, "temperature", 0, 2)
    if temperature is not None:
        chat["temperature"] = temperature
    if body.get("seed") is not None:
        chat["seed"] = body["seed"]
    return chat


def chat_answer_to_completion(chat: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """A chat completion answer -> OpenAI's ``text_completion`` object (cut at the first stop sequence)."""
    text, finish_reason = _chat_choice(chat)
    cuts = [text.find(stop) for stop in _stop_sequences(request) if stop in text]
    if cuts:
        text, finish_reason = text[: min(cuts)], "stop"
    return {
        "id": f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": chat["created"],
        "model": chat["model"],
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": chat["usage"],
        "system_fingerprint": chat.get("system_fingerprint", "local"),
    }


# -- chat streaming ---------------------------------------------------------------------------------------
def stream_options(body: dict[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) of a chat completions body, checked as OpenAI checks them."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is None:
        return bool(stream), False
    if not stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             "stream_options")
    if not isinstance(options, dict):
        raise invalid_type("stream_options", "an object", options)
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise invalid_type("stream_options.include_usage", "a boolean", include_usage)
    return True, include_usage


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def chat_completion_chunks(chat: dict[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """Server-sent events of a finished chat completion, in OpenAI's ``chat.completion.chunk`` shape."""
    text, finish_reason = _chat_choice(chat)
    base = {"id": chat["id"], "object": "chat.completion.chunk", "created": chat["created"], "model": chat["model"],
            "system_fingerprint": chat.get("system_fingerprint", "local")}
    usage_field = {"usage": None} if include_usage else {}  # null on every chunk but the last one

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **usage_field}

    yield _event(choice({"role": "assistant", "content": "", "refusal": None}))
    if text:
        yield _event(choice({"content": text}))
    yield _event(choice({}, finish_reason))
    if include_usage:
        yield _event({**base, "choices": [], "usage": chat["usage"]})
    yield b"data: [DONE]\n\n"

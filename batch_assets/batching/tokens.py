"""Exact input-token counts with tiktoken, fully offline.

Model -> encoding and the offline rank files: :mod:`batch_assets.batching.encodings`.

Chat requests are counted the way OpenAI bills messages (the OpenAI cookbook "How to count tokens
with tiktoken" formula, verified there against the API for gpt-3.5/gpt-4/gpt-4o/gpt-4o-mini):
3 tokens per message, + the tokens of every string value in it (role, content, name),
+ 1 per ``name``, + 3 priming the assistant reply. On top of that, once per request:

* ``tools`` (:func:`tools_tokens`): the same cookbook's section "Counting tokens for chat completions with
  tool calls", which the API matched on its example (105 tokens for gpt-3.5-turbo / gpt-4, 101 for
  gpt-4o / gpt-4o-mini): per function 7 tokens (10 on cl100k models) + ``name:description``, + 3 if it has
  properties, per property 3 + ``key:type:description`` (one trailing "." dropped), per enum list -3 and
  3 + its tokens per item, + 12 after the last function. Models the cookbook does not list use the
  constants of their encoding's family (o200k: gpt-4o's). Nested schemas (``properties`` / ``items`` inside
  a property), which the cookbook does not cover, add the tokens of their compact JSON.
* ``response_format`` with a JSON schema (:func:`response_format_tokens`): OpenAI documents no rule. The
  one public rule (openai-cookbook issue #2140, checked there against the API's reported usage on schemas
  of several sizes): the tokens of the schema as compact JSON (``JSON.stringify``) after deleting every
  ``required``, ``additionalProperties`` and ``$schema`` key at any depth, + 9. ``json_object`` and
  ``text`` formats add nothing.

Both are the same for every request of a file: :func:`chat_overhead_tokens` computes them once.

Responses API requests (``/v1/responses``) are counted with the same cookbook formula over the
messages the request amounts to (:func:`responses_chat_messages`): ``instructions`` as one
developer message (the API reference calls it "equivalent to a text input with the developer
role"), a text ``input`` as one user message, a list ``input`` message by message with its text
parts, plus the ``text.format`` JSON schema by the rule above. OpenAI publishes no formula for the
Responses API; the cookbook one is the documented overhead of the same chat models, so it is the
estimate used here.

Legacy completions (``/v1/completions``) bill the tokens of ``prompt`` with no message overhead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson

from batch_assets.batching.encodings import (
    CL100K_BASE,
    O200K_BASE,
    count_text_tokens,
    encoding_for_model,
)
from batch_assets.batching.protocol import (
    CHAT_COMPLETIONS_URL,
    COMPLETIONS_URL,
    EMBEDDINGS_URL,
    RESPONSES_URL,
    SUPPORTED_URLS,
)

# The cookbook's chat formula.
TOKENS_PER_MESSAGE: Final = 3
TOKENS_PER_NAME: Final = 1
REPLY_PRIMING_TOKENS: Final = 3

# response_format JSON schemas: the public rule (module docstring) drops these keys and adds 9 tokens.
SCHEMA_DROPPED_KEYS: Final = frozenset({"required", "additionalProperties", "$schema"})
SCHEMA_OVERHEAD_TOKENS: Final = 9


class ToolTokenConstants(NamedTuple):
    """The cookbook's per-model constants for counting function tools."""

    func_init: int
    prop_init: int
    prop_key: int
    enum_init: int
    enum_item: int
    func_end: int


# gpt-4o / gpt-4o-mini (o200k) and gpt-3.5-turbo / gpt-4 (cl100k), as the cookbook gives them.
TOOL_TOKEN_CONSTANTS: Final = {
    O200K_BASE: ToolTokenConstants(7, 3, 3, -3, 3, 12),
    CL100K_BASE: ToolTokenConstants(10, 3, 3, -3, 3, 12),
}
# Keys of a property schema the cookbook's rule reads; any other nested content is counted as compact JSON.
_PROPERTY_KEYS_COUNTED: Final = frozenset({"type", "description", "enum"})

def _message_strings(message: Mapping[str, Any], where: str) -> tuple[list[str], int]:
    """The strings of one chat message that are tokenized, and its fixed overhead."""
    if not isinstance(message, Mapping):
        raise ValueError(f"{where}: a chat message must be a dict, got {type(message).__name__}")
    strings: list[str] = []
    overhead = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "name":
            overhead += TOKENS_PER_NAME
        if value is None:
            continue
        if isinstance(value, str):
            strings.append(value)
        elif key == "content" and isinstance(value, list):
            for part in value:
                if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                    raise ValueError(
                        f"{where}: content part of type {kind!r} cannot be counted offline; "
                        "only text parts ({'type': 'text', 'text': str}) are supported"
                    )
                strings.append(part["text"])
        else:
            raise ValueError(
                f"{where}: cannot count message field {key!r} of type {type(value).__name__}; "
                "only string fields and text content parts are supported"
            )
    return strings, overhead


def _drop_schema_keys(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _drop_schema_keys(v) for k, v in node.items() if k not in SCHEMA_DROPPED_KEYS}
    if isinstance(node, list):
        return [_drop_schema_keys(v) for v in node]
    return node


def _compact_json(value: Any) -> str:
    # What JavaScript's JSON.stringify writes: no spaces, non-ASCII kept as is, keys in their order.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def response_format_tokens(response_format: Mapping[str, Any] | None, model: str) -> int:
    """Input tokens a ``response_format`` adds to a chat request (rule in the module docstring).

    Accepts the chat form ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` and the
    Responses form ``{"type": "json_schema", "schema": ...}``; ``text`` / ``json_object`` / None add 0.
    """
    if response_format is None:
        return 0
    if not isinstance(response_format, Mapping):
        raise ValueError(f"response_format must be a dict, got {type(response_format).__name__}")
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return 0
    if kind != "json_schema":
        raise ValueError(f"cannot count response_format of type {kind!r}: expected text, json_object or json_schema")
    spec = response_format.get("json_schema", response_format)
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        raise ValueError("a json_schema response_format needs a 'schema' dict (see json_schema_response_format)")
    text = _compact_json(_drop_schema_keys(schema))
    return len(encoding_for_model(model).encode_ordinary(text)) + SCHEMA_OVERHEAD_TOKENS


def _without_final_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def tools_tokens(tools: Sequence[Mapping[str, Any]] | None, model: str) -> int:
    """Input tokens the ``tools`` of a chat request add (the cookbook rule in the module docstring)."""
    if not tools:
        return 0
    encoding = encoding_for_model(model)
    constants = TOOL_TOKEN_CONSTANTS[encoding.name]

    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    total = 0
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise ValueError(f"tool {i}: only {{'type': 'function', 'function': {{...}}}} tools can be counted")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool {i}: a function needs a 'name'")
        description = _without_final_period(str(function.get("description") or ""))
        total += constants.func_init + count(f"{name}:{description}")
        parameters = function.get("parameters") or {}
        properties = (parameters.get("properties") or {}) if isinstance(parameters, Mapping) else {}
        if properties:
            total += constants.prop_init
            for key, prop in properties.items():
                prop = prop if isinstance(prop, Mapping) else {}
                total += constants.prop_key
                if "enum" in prop:
                    total += constants.enum_init
                    for item in prop["enum"]:
                        total += constants.enum_item + count(item if isinstance(item, str) else _compact_json(item))
                kind = prop.get("type", "")
                kind = kind if isinstance(kind, str) else ",".join(map(str, kind))
                total += count(f"{key}:{kind}:{_without_final_period(str(prop.get('description') or ''))}")
                nested = {k: v for k, v in prop.items() if k not in _PROPERTY_KEYS_COUNTED}
                if nested:  # beyond the cookbook's example: an estimate
                    total += count(_compact_json(_drop_schema_keys(nested)))
    return total + constants.func_end


def chat_overhead_tokens(
    model: str, *, response_format: Mapping[str, Any] | None = None, tools: Sequence[Mapping[str, Any]] | None = None
) -> int:
    """Input tokens a chat request pays on top of its messages: its ``response_format`` schema and its tools.

    The same for every request that shares them: compute it once per file, not per request.
    """
    return response_format_tokens(response_format, model) + tools_tokens(tools, model)


def count_chat_tokens(
    messages_list: Sequence[Sequence[Mapping[str, Any]]],
    model: str,
    *,
    num_threads: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[int]:
    """Prompt tokens of each conversation, by the cookbook formula (see the module docstring).

    Vectorised: every distinct string across all conversations is encoded once, in parallel
    (a system prompt shared by a million requests is tokenized once). ``response_format`` and ``tools``,
    shared by every conversation, add :func:`chat_overhead_tokens` (counted once) to each.
    """
    request_overhead = 0
    if response_format is not None or tools:
        request_overhead = chat_overhead_tokens(model, response_format=response_format, tools=tools)
    index: dict[str, int] = {}
    owners: list[list[int]] = []
    totals: list[int] = []
    for i, messages in enumerate(messages_list):
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ValueError(f"conversation {i}: expected a list of message dicts")
        total = REPLY_PRIMING_TOKENS + request_overhead
        ids: list[int] = []
        for j, message in enumerate(messages):
            strings, overhead = _message_strings(message, f"conversation {i}, message {j}")
            total += overhead
            for s in strings:
                ids.append(index.setdefault(s, len(index)))
        owners.append(ids)
        totals.append(total)
    counts = count_text_tokens(list(index), model, num_threads=num_threads)
    return [total + sum(counts[k] for k in ids) for total, ids in zip(totals, owners, strict=True)]


def _texts_or_token_ids(value: Any, what: str) -> list[str] | list[list[int]]:
    """A text, texts, token ids or lists of token ids (how embeddings `input` and completions `prompt`
    may come) as a list of inputs."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]  # one input given as token ids
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return value  # several inputs given as token ids
    raise ValueError(f"{what} must be a non-empty str or list, got {value!r:.80}")


def embedding_inputs(body: Mapping[str, Any]) -> list[str] | list[list[int]]:
    """The inputs of an embeddings body as a list (a str input is one input)."""
    return _texts_or_token_ids(body.get("input"), "embeddings body 'input'")


def responses_chat_messages(
    input_: str | Sequence[Mapping[str, Any]], instructions: str | None = None
) -> list[dict[str, Any]]:
    """The chat messages a Responses API request amounts to, for counting (see the module docstring).

    ``input_`` is a text or a list of ``{role, content}`` messages (``type: "message"`` optional)
    whose content is a text or a list of ``input_text`` / ``output_text`` parts.
    """
    messages: list[dict[str, Any]] = []
    if instructions is not None:
        messages.append({"role": "developer", "content": instructions})
    if isinstance(input_, str):
        messages.append({"role": "user", "content": input_})
        return messages
    if isinstance(input_, bytes) or not isinstance(input_, Sequence):
        raise ValueError(f"a Responses input must be a str or a list of messages, got {type(input_).__name__}")
    for i, item in enumerate(input_):
        if not isinstance(item, Mapping) or item.get("type", "message") != "message" or "role" not in item:
            kind = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(f"Responses input item {i} of type {kind!r} cannot be counted offline; "
                             "only messages ({'role', 'content'}) are supported")
        content = item.get("content")
        if isinstance(content, list):
            content = [
                {"type": "text", "text": part.get("text")}
                if isinstance(part, Mapping) and part.get("type") in ("input_text", "output_text") else part
                for part in content
            ]
        messages.append({"role": item["role"], "content": content})
    return messages


def count_responses_tokens(
    inputs: Sequence[str | Sequence[Mapping[str, Any]]],
    model: str,
    *,
    instructions: str | None = None,
    text_format: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
) -> list[int]:
    """Input tokens of each Responses API request (``input`` plus the shared ``instructions`` and the
    shared ``text.format`` schema, counted once)."""
    counts = count_chat_tokens([responses_chat_messages(x, instructions) for x in inputs], model,
                               num_threads=num_threads)
    overhead = chat_overhead_tokens(model, response_format=_responses_format_as_chat({"text": {"format": text_format}}))
    return [c + overhead for c in counts] if overhead else counts


def count_request_tokens(
    url: str, bodies: Sequence[Mapping[str, Any]], *, num_threads: int | None = None
) -> list[int]:
    """Input tokens of each request body for one endpoint; each body's own ``model`` picks the encoding.

    Embeddings: the tokens of ``input`` (str, list of str, or token ids). Chat completions: the
    message formula, plus each body's ``response_format`` schema and ``tools`` (counted once per distinct
    value). Responses: the message formula over ``instructions`` + ``input``, plus its ``text.format``
    schema. Completions: the tokens of ``prompt``. Bodies of several models are grouped and counted per model.
    """
    if url not in SUPPORTED_URLS:
        raise ValueError(f"unsupported endpoint {url!r}; supported: {', '.join(SUPPORTED_URLS)}")
    by_model: dict[str, list[int]] = {}
    for i, body in enumerate(bodies):
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ValueError(f"body {i} has no 'model'")
        by_model.setdefault(model, []).append(i)
    result = [0] * len(bodies)
    for model, positions in by_model.items():
        group = [bodies[i] for i in positions]
        if url == CHAT_COMPLETIONS_URL:
            if any("messages" not in body for body in group):
                raise ValueError("a chat completions body has no 'messages'")
            counts = count_chat_tokens([body["messages"] for body in group], model, num_threads=num_threads)
            counts = [c + o for c, o in zip(counts, _chat_overheads(group, model), strict=True)]
        elif url == RESPONSES_URL:
            if any("input" not in body for body in group):
                raise ValueError("a Responses body has no 'input'")
            counts = count_chat_tokens([responses_chat_messages(body["input"], body.get("instructions"))
                                        for body in group], model, num_threads=num_threads)
            as_chat = [{"response_format": _responses_format_as_chat(body)} for body in group]
            counts = [c + o for c, o in zip(counts, _chat_overheads(as_chat, model), strict=True)]
        elif url == COMPLETIONS_URL:
            counts = _count_inputs([_texts_or_token_ids(body.get("prompt"), "completions body 'prompt'")
                                    for body in group], model, num_threads)
        else:
            assert url == EMBEDDINGS_URL
            counts = _count_inputs([embedding_inputs(body) for body in group], model, num_threads)
        for i, c in zip(positions, counts, strict=True):
            result[i] = c
    return result


def _chat_overheads(bodies: Sequence[Mapping[str, Any]], model: str) -> list[int]:
    """:func:`chat_overhead_tokens` of each body, computed once per distinct (response_format, tools)."""
    by_key: dict[bytes, int] = {}
    overheads = []
    for body in bodies:
        response_format, tools = body.get("response_format"), body.get("tools")
        if response_format is None and not tools:
            overheads.append(0)
            continue
        key = orjson.dumps([response_format, tools])
        if key not in by_key:
            by_key[key] = chat_overhead_tokens(model, response_format=response_format, tools=tools)
        overheads.append(by_key[key])
    return overheads


def _responses_format_as_chat(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Responses body's ``text.format`` JSON schema in chat's ``response_format`` shape (same rule)."""
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, Mapping) else None
    if not isinstance(fmt, Mapping) or fmt.get("type") != "json_schema":
        return None
    return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}


def _count_inputs(
    inputs_per_body: Sequence[list[str] | list[list[int]]], model: str, num_threads: int | None
) -> list[int]:
    """Tokens per body of texts (encoded) and token-id lists (counted as they are)."""
    texts: list[str] = []
    spans: list[tuple[int, int, int]] = []  # (start, end) in texts, + tokens given as ids
    for inputs in inputs_per_body:
        start = len(texts)
        id_tokens = 0
        for item in inputs:
            if isinstance(item, str):
                texts.append(item)
            else:
                id_tokens += len(item)
        spans.append((start, len(texts), id_tokens))
    counts = count_text_tokens(texts, model, num_threads=num_threads)
    return [sum(counts[a:b]) + ids for a, b, ids in spans]

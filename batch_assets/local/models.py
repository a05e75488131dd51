"""The models behind the local OpenAI-compatible Batch API: fakes and a lazy loader.

Their shared names and interfaces are in :mod:`batch_assets.local.model_api`. The real models live in
:mod:`batch_assets.local.embedder` (all-MiniLM-L6-v2, int8 ONNX) and
:mod:`batch_assets.local.llm` (SmolLM2-135M-Instruct, GGUF on llama.cpp). Their heavy dependencies
(the ``local`` extra) are imported only when a real model is first used, so this module imports
without them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from batch_assets.local.config import ModelBackend, is_model_backend
from batch_assets.local.model_api import (
    FAKE_CHAT_MODEL_NAME,
    FAKE_EMBEDDING_MODEL_NAME,
    ChatModel,
    ChatOutput,
    EmbeddingModel,
    EmbeddingOutput,
    check_dimensions,
)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def message_text(message: dict) -> str:
    """The text of a chat message whose content is a string or a list of OpenAI content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


class FakeEmbedder:
    """Deterministic hash-seeded unit vectors; for unit tests only (no semantics)."""

    name: str = FAKE_EMBEDDING_MODEL_NAME
    native_dims: int = 384

    def embed(self, texts: list[str], dimensions: int | None = None) -> EmbeddingOutput:
        check_dimensions(dimensions, self.native_dims)
        dims = dimensions or self.native_dims
        vectors = np.zeros((len(texts), dims), dtype=np.float32)
        for i, text in enumerate(texts):
            full = np.random.default_rng(_digest(text)).standard_normal(self.native_dims)[:dims]
            vectors[i] = full / np.linalg.norm(full)
        return EmbeddingOutput(vectors=vectors, prompt_tokens=self.token_counts(texts), model=self.name)

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(t.split()) + 2 for t in texts]  # +2 like [CLS] and [SEP]


class FakeChat:
    """Deterministic answers; for unit tests only.

    With a json_schema response_format it returns an object valid for simple flat schemas (an enum
    property gets a value picked by a hash of the last user message); otherwise it echoes.
    """

    name: str = FAKE_CHAT_MODEL_NAME

    def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        response_format: dict | None = None,
    ) -> ChatOutput:
        if not messages:
            raise ValueError("messages must not be empty")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        prompt_tokens = sum(len(message_text(m).split()) + 4 for m in messages)
        kind = (response_format or {}).get("type", "text")
        if kind == "json_schema":
            schema = (response_format or {}).get("json_schema", {}).get("schema", {})
            content = json.dumps(_fake_object(schema, last_user))
            words = [content]  # one "token": structured answers are never cut short
        elif kind == "json_object":
            content = json.dumps({"echo": last_user[:40]})
            words = [content]
        else:
            words = ("Echo: " + last_user).split()[:20]
            content = " ".join(words)
        finish = "stop"
        if max_tokens is not None and len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
            content = " ".join(words)
        return ChatOutput(content, prompt_tokens, len(words), finish, self.name)


def _fake_object(schema: dict, key_text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if "enum" in prop and prop["enum"]:
            out[name] = prop["enum"][_digest(f"{name}\0{key_text}") % len(prop["enum"])]
        else:
            out[name] = {"string": "fake", "number": 0.0, "integer": 0, "boolean": False}.get(prop.get("type"), None)
    return out


class LocalModels:
    """Lazily loads each model on first use (loading the LLM costs ~1 s; an embeddings-only batch
    must not load it). Safe to share between threads. ``chat_engines`` x ``chat_slots`` chat calls
    and ``embed_sessions`` embeddings calls run at once (the batch worker uses one engine and one
    session per core); the default is one at a time."""

    def __init__(
        self,
        backend: ModelBackend = "real",
        *,
        embed_threads: int | None = None,
        chat_threads: int | None = None,
        chat_engines: int = 1,
        chat_slots: int = 1,
        embed_sessions: int = 1,
    ) -> None:
        if not is_model_backend(backend):
            raise ValueError(f"backend must be 'real' or 'fake', got {backend!r}")
        self.backend = backend
        self._embed_threads = embed_threads
        self._chat_threads = chat_threads
        self._chat_engines = chat_engines
        self._chat_slots = chat_slots
        self._embed_sessions = embed_sessions
        self._embedder: EmbeddingModel | None = None
        self._chat: ChatModel | None = None
        self._lock = threading.Lock()

    def _loaded(self, attr: str, load: Callable[[], Any]) -> Any:
        """Loads a model once, on first use (thread-safe)."""
        if getattr(self, attr) is None:
            with self._lock:
                if getattr(self, attr) is None:
                    setattr(self, attr, load())
        return getattr(self, attr)

    @property
    def embedder(self) -> EmbeddingModel:
        def load() -> EmbeddingModel:
            if self.backend == "fake":
                return FakeEmbedder()
            from batch_assets.local.embedder import OnnxMiniLMEmbedder

            return OnnxMiniLMEmbedder(threads=self._embed_threads, sessions=self._embed_sessions)

        return self._loaded("_embedder", load)

    @property
    def chat(self) -> ChatModel:
        def load() -> ChatModel:
            if self.backend == "fake":
                return FakeChat()
            from batch_assets.local.llm import SmolLM2Chat

            return SmolLM2Chat(threads=self._chat_threads, engines=self._chat_engines, slots=self._chat_slots)

        return self._loaded("_chat", load)

    def close(self) -> None:
        """Frees the loaded models (stops the llama.cpp engine thread); they reload on next use."""
        with self._lock:
            chat, self._chat, self._embedder = self._chat, None, None
        close = getattr(chat, "close", None)
        if close is not None:
            close()


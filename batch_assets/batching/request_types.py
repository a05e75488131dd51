"""What request files are made of and from: the limits a file keeps to, the requests written to it, what a written
file records, and the chunks builders hand over. The writing is in :mod:`batch_assets.batching.file_set`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import polars as pl

from batch_assets.batching.protocol import (
    EMBEDDINGS_URL,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
)
from batch_assets.batching.templates import BodyTemplate, SplicedBody

UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class BatchLimits:
    """Limits one batch input file must respect.

    ``max_tokens_per_file`` is a per-file input-token budget for every model (None: no budget);
    ``tokens_per_file_by_model`` overrides it per exact model name, e.g. each model's
    enqueued-token limit for your OpenAI tier, so a file never exceeds what that model accepts.
    ``max_embedding_inputs_per_file`` counts inputs (a request may embed several texts).
    """

    max_requests_per_file: int = MAX_REQUESTS_PER_FILE
    max_bytes_per_file: int = MAX_FILE_BYTES
    max_tokens_per_file: int | None = None
    tokens_per_file_by_model: Mapping[str, int] = field(default_factory=dict)
    max_embedding_inputs_per_file: int = MAX_EMBEDDING_INPUTS_PER_BATCH

    def __post_init__(self) -> None:
        for name in ("max_requests_per_file", "max_bytes_per_file", "max_embedding_inputs_per_file"):
            _check_positive(name, getattr(self, name))
        if self.max_tokens_per_file is not None:
            _check_positive("max_tokens_per_file", self.max_tokens_per_file)
        for model, budget in self.tokens_per_file_by_model.items():
            _check_positive(f"tokens_per_file_by_model[{model!r}]", budget)
        object.__setattr__(self, "tokens_per_file_by_model", MappingProxyType(dict(self.tokens_per_file_by_model)))

    @classmethod
    def openai(cls, tokens_per_file_by_model: Mapping[str, int] | None = None) -> BatchLimits:
        """OpenAI's documented per-file limits (50,000 requests, 200 MB, 50,000 embedding inputs),
        plus optional per-model token budgets (your tier's enqueued-token limits)."""
        return cls(tokens_per_file_by_model=dict(tokens_per_file_by_model or {}))

    def token_budget(self, model: str) -> int | None:
        """Input-token budget of one file for ``model`` (None: unlimited)."""
        return self.tokens_per_file_by_model.get(model, self.max_tokens_per_file)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"BatchLimits.{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request ready to write: its body, and the input tokens and inputs it will use."""

    custom_id: str
    url: str
    model: str
    body: Mapping[str, Any]
    input_tokens: int
    n_inputs: int = 1
    item_id: str = ""  # the item the request answers (the builders set it; custom_id is derived from it)
    body_json: bytes = b""  # the body already serialised (a template's builders); empty: serialise `body`


# The columns of RequestFile.requests: one row per request, in the file's order.
REQUEST_ROW_SCHEMA: Final = pl.Schema({
    "custom_id": pl.String,
    "item_id": pl.String,
    "body_sha256": pl.String,  # of the request body's JSON bytes as written
    "input_tokens": pl.Int64,
})


def request_rows(custom_ids: Sequence[str], item_ids: Sequence[str], body_sha256s: Sequence[str],
                 input_tokens: Sequence[int]) -> pl.DataFrame:
    """A file's per-request columns (``REQUEST_ROW_SCHEMA``)."""
    return pl.DataFrame([pl.Series(name, values, dtype=dtype) for (name, dtype), values in zip(
        REQUEST_ROW_SCHEMA.items(), (custom_ids, item_ids, body_sha256s, input_tokens), strict=True)])


@dataclass(frozen=True)
class RequestFile:
    """One written batch input file: what it holds, for upload and bookkeeping.

    Its requests are columns (``requests``), not Python objects: a month of a million requests is ~150 MB as
    columns against ~300 MB as tuples of str and int, and a plan's rows are these frames put together."""

    path: Path
    url: str
    model: str
    n_requests: int
    n_bytes: int
    input_tokens: int
    n_inputs: int  # embedding inputs (0 for chat files)
    requests: pl.DataFrame = field(default_factory=REQUEST_ROW_SCHEMA.to_frame, compare=False, repr=False)
    sha256: str = ""  # of the file's bytes
    max_output_tokens: int | None = None  # sum of the requests' output caps (None: some request has none)

    # Each of these makes a tuple from the column on every call: read it once, not in a loop.
    @property
    def custom_ids(self) -> tuple[str, ...]:
        return tuple(self.requests["custom_id"].to_list())

    @property
    def item_ids(self) -> tuple[str, ...]:
        return tuple(self.requests["item_id"].to_list())

    @property
    def body_sha256s(self) -> tuple[str, ...]:
        return tuple(self.requests["body_sha256"].to_list())

    @property
    def request_tokens(self) -> tuple[int, ...]:
        return tuple(self.requests["input_tokens"].to_list())


@dataclass(frozen=True)
class SkippedRequest:
    """A request :func:`plan_request_files` left out (``keep`` said its body needs no new answer)."""

    custom_id: str
    item_id: str
    body_sha256: str
    input_tokens: int


@dataclass(frozen=True)
class PlannedFiles:
    files: list[RequestFile]
    skipped: list[SkippedRequest]


# Does a request still need an answer? (given its item_id and its body's sha256)
KeepRequest = Callable[[str, str], bool]
_OUTPUT_CAP_KEYS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def output_cap(url: str, body: Mapping[str, Any]) -> int | None:
    """Most output tokens a request may bill: 0 for embeddings, its cap for chat/responses, None if uncapped."""
    if url == EMBEDDINGS_URL:
        return 0
    for key in _OUTPUT_CAP_KEYS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def sanitize_model_name(model: str) -> str:
    """A model name safe in a file name: ``local/fake-embedder`` -> ``local_fake-embedder``."""
    return UNSAFE_NAME_CHARS.sub("_", model) or "model"


@dataclass(frozen=True)
class TemplateChunk:
    """Requests of one body template, as columns: what the file writer takes in bulk."""

    url: str
    model: str
    template: BodyTemplate
    custom_ids: list[str]
    item_ids: list[str]
    values: list[str]  # each request's string in the template's hole
    input_tokens: list[int]
    n_inputs: int = 1

    def requests(self) -> Iterator[PreparedRequest]:
        for cid, item_id, value, tokens in zip(self.custom_ids, self.item_ids, self.values, self.input_tokens,
                                               strict=True):
            yield PreparedRequest(cid, self.url, self.model, SplicedBody(self.template, value), tokens, self.n_inputs,
                                  item_id, self.template.render(value))


class ChunkedRequests(Iterable[PreparedRequest]):
    """Requests a builder makes lazily, chunk by chunk. Iterating gives one :class:`PreparedRequest` at a time;
    the file writer takes template chunks whole (the same lines, written in bulk)."""

    def __init__(self, chunks: Callable[[], Iterable[TemplateChunk | list[PreparedRequest]]]) -> None:
        self._chunks = chunks

    def chunks(self) -> Iterator[TemplateChunk | list[PreparedRequest]]:
        yield from self._chunks()

    def __iter__(self) -> Iterator[PreparedRequest]:
        for part in self._chunks():
            if isinstance(part, TemplateChunk):
                yield from part.requests()
            else:
                yield from part

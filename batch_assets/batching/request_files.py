"""Split prepared requests into JSONL batch input files under every limit, streamed.

One file holds one endpoint and one model (OpenAI's rule). :func:`write_request_files` keeps one
open writer per (url, model), serialises each line once with orjson, counts its bytes exactly as
written (line + ``\\n``), and rolls to a new file before a line would break any limit: requests,
bytes, input tokens (per-file budget, e.g. a model's enqueued-token limit), embedding inputs.
Files are written as ``<name>.tmp`` and renamed when complete; on any error every file this call
wrote is removed, so a failed call leaves no half-set of files behind.

:func:`plan_request_files` is the same writer for the batch ledger: files are content-addressed (named by
the sha256 of their bytes, never rewritten: an identical file is already there), every request's body is
hashed (the body's identity for "has this item already been answered?"), and a ``keep`` predicate leaves out
requests that need no new answer.

The builders that make the requests are in :mod:`batch_assets.batching.prepare`; requests of one body template
arrive as :class:`TemplateChunk` columns and are written in bulk (the same files and bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final

import orjson

from batch_assets.batching.protocol import (
    EMBEDDINGS_URL,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    SUPPORTED_URLS,
)
from batch_assets.batching.templates import BodyTemplate, SplicedBody

_FLUSH_BYTES: Final = 1 << 20
_LINES_AT_ONCE: Final = 4096
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]")


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


@dataclass(frozen=True)
class RequestFile:
    """One written batch input file: what it holds, for upload and bookkeeping."""

    path: Path
    url: str
    model: str
    n_requests: int
    n_bytes: int
    input_tokens: int
    n_inputs: int  # embedding inputs (0 for chat files)
    custom_ids: tuple[str, ...]
    sha256: str = ""  # of the file's bytes
    item_ids: tuple[str, ...] = ()
    body_sha256s: tuple[str, ...] = ()  # per request, of its body's JSON bytes as written
    request_tokens: tuple[int, ...] = ()  # per request, its input tokens
    max_output_tokens: int | None = None  # sum of the requests' output caps (None: some request has none)


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
    return _UNSAFE_NAME_CHARS.sub("_", model) or "model"


class _Writer:
    __slots__ = ("path", "tmp", "fh", "url", "model", "n_requests", "n_bytes", "tokens", "n_inputs", "ids",
                 "item_ids", "body_shas", "digest", "content_addressed", "output_cap", "stem", "request_tokens",
                 "pending")

    def __init__(self, path: Path, url: str, model: str, *, content_addressed: bool = False, stem: str = "") -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self):x}.tmp")
        self.fh: BinaryIO = open(self.tmp, "wb")  # closed in finish() or discard()
        self.pending = bytearray()
        self.url, self.model = url, model
        self.n_requests = self.n_bytes = self.tokens = self.n_inputs = 0
        self.ids: list[str] = []
        self.item_ids: list[str] = []
        self.body_shas: list[str] = []
        self.request_tokens: list[int] = []
        self.digest = hashlib.sha256()
        self.content_addressed, self.stem = content_addressed, stem
        self.output_cap: int | None = 0

    def add_rows(self, lines: list[bytes], ids: list[str], item_ids: Sequence[str], body_shas: list[str],
                 tokens: Sequence[int], n_bytes: int, n_inputs: int, output_tokens_cap: int | None) -> None:
        """Appends request lines (and what the file records of them); ``output_tokens_cap`` is their summed cap."""
        # Lines are hashed and written a megabyte or more at a time: hashlib releases the GIL only for large
        # updates, so this overlaps with token counting in other threads, and costs one call per MB.
        if len(lines) == 1:
            self.pending += lines[0]
            if len(self.pending) >= _FLUSH_BYTES:
                self._flush()
        else:
            self._flush()
            data = b"".join(lines)
            self.digest.update(data)
            self.fh.write(data)
        self.n_requests += len(lines)
        self.n_bytes += n_bytes
        self.tokens += sum(tokens)
        self.n_inputs += n_inputs
        self.ids += ids
        self.item_ids += item_ids
        self.body_shas += body_shas
        self.request_tokens += tokens
        if self.output_cap is not None:
            self.output_cap = None if output_tokens_cap is None else self.output_cap + output_tokens_cap

    def _flush(self) -> None:
        self.digest.update(self.pending)
        self.fh.write(self.pending)
        self.pending.clear()

    def finish(self) -> RequestFile:
        self._flush()
        self.fh.close()
        sha = self.digest.hexdigest()
        if self.content_addressed:
            self.path = self.path.with_name(f"{self.stem}-{sha}.jsonl")
            if self.path.exists():  # the same bytes were written before: never rewrite a submitted file
                self.tmp.unlink()
            else:
                os.replace(self.tmp, self.path)
        else:
            os.replace(self.tmp, self.path)
        return RequestFile(self.path, self.url, self.model, self.n_requests, self.n_bytes,
                           self.tokens, self.n_inputs, tuple(self.ids), sha, tuple(self.item_ids),
                           tuple(self.body_shas), tuple(self.request_tokens), self.output_cap)

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


def write_request_files(
    requests: Iterable[PreparedRequest], out_dir: Path, *, limits: BatchLimits, file_stem: str
) -> list[RequestFile]:
    """Stream ``requests`` into JSONL files named ``{file_stem}-{model}-{index:03d}.jsonl``.

    The index counts files per (sanitized) model, from 000, in input order: deterministic for the
    same input. Existing files of the same name are replaced. Returns the files sorted by model name, then index.
    Raises ValueError on a duplicate custom_id, an unsupported url, or a single
    request that breaks a whole-file limit on its own.
    """
    return _write(requests, out_dir, limits=limits, file_stem=file_stem, keep=None, content_addressed=False).files


def plan_request_files(
    requests: Iterable[PreparedRequest], out_dir: Path, *, limits: BatchLimits, file_stem: str,
    keep: KeepRequest | None = None,
) -> PlannedFiles:
    """Like :func:`write_request_files`, for the ledger: files named ``{file_stem}-{model}-{sha256}.jsonl``
    (content-addressed: an identical file already there is left as it is), per-request body hashes, and
    requests for which ``keep(item_id, body_sha256)`` is False left out and returned as ``skipped``."""
    return _write(requests, out_dir, limits=limits, file_stem=file_stem, keep=keep, content_addressed=True)


def _write(
    requests: Iterable[PreparedRequest], out_dir: Path, *, limits: BatchLimits, file_stem: str,
    keep: KeepRequest | None, content_addressed: bool,
) -> PlannedFiles:
    if not file_stem or _UNSAFE_NAME_CHARS.search(file_stem):
        raise ValueError(f"file_stem {file_stem!r} must be non-empty and use only [A-Za-z0-9._-]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = _FileSet(out_dir, limits, file_stem, keep, content_addressed)
    try:
        if isinstance(requests, ChunkedRequests):
            for part in requests.chunks():
                if isinstance(part, TemplateChunk):
                    files.add_chunk(part)
                else:
                    for req in part:
                        files.add(req)
        else:
            for req in requests:
                files.add(req)
        return PlannedFiles(files.finish(), files.skipped)
    except BaseException:
        files.discard()
        raise


class _FileSet:
    """The files one call writes: one open writer per (url, model), rolled over before a line breaks a limit."""

    def __init__(self, out_dir: Path, limits: BatchLimits, file_stem: str, keep: KeepRequest | None,
                 content_addressed: bool) -> None:
        self.out_dir, self.limits, self.file_stem = out_dir, limits, file_stem
        self.keep, self.content_addressed = keep, content_addressed
        self.writers: dict[tuple[str, str], _Writer] = {}
        self.next_index: dict[str, int] = {}
        self.done: list[RequestFile] = []
        self.seen: set[str] = set()
        self.budgets: dict[str, int | None] = {}
        self.url_json: dict[str, bytes] = {}
        self.skipped: list[SkippedRequest] = []

    def _writer(self, cid: str, url: str, model: str) -> _Writer | None:
        w = self.writers.get((url, model))
        if w is None and url not in self.url_json:
            if url not in SUPPORTED_URLS:
                raise ValueError(f"{cid}: unsupported endpoint {url!r}; supported: {SUPPORTED_URLS}")
            self.url_json[url] = orjson.dumps(url)
        if w is None and model not in self.budgets:
            self.budgets[model] = self.limits.token_budget(model)
        return w

    def _next_writer(self, req: PreparedRequest, n_bytes: int, inputs: int) -> _Writer:
        """A new file for ``req`` (which does not fit the current one), after checking it fits a file at all."""
        _check_fits(req, n_bytes, self.budgets[req.model], inputs, self.limits)
        current = self.writers.get((req.url, req.model))
        if current is not None:
            self.done.append(current.finish())
        index = self.next_index.get(safe := sanitize_model_name(req.model), 0)
        self.next_index[safe] = index + 1
        w = self.writers[(req.url, req.model)] = _Writer(
            self.out_dir / f"{self.file_stem}-{safe}-{index:03d}.jsonl", req.url, req.model,
            content_addressed=self.content_addressed, stem=f"{self.file_stem}-{safe}")
        return w

    def add(self, req: PreparedRequest) -> None:
        cid = req.custom_id
        if cid in self.seen:
            raise ValueError(f"duplicate custom_id {cid!r}: every request needs its own id")
        self.seen.add(cid)
        body = req.body_json or orjson.dumps(req.body)
        body_sha = hashlib.sha256(body).hexdigest()
        if self.keep is not None and not self.keep(req.item_id, body_sha):
            self.skipped.append(SkippedRequest(cid, req.item_id, body_sha, req.input_tokens))
            return
        w = self._writer(cid, req.url, req.model)
        # The line is built around the body's bytes, so the body is serialised (and hashed) once.
        line = b"".join((b'{"custom_id":', orjson.dumps(cid), b',"method":"POST","url":', self.url_json[req.url],
                         b',"body":', body, b"}\n"))
        if req.body.get("model") != req.model:
            raise ValueError(f"{cid}: body model {req.body.get('model')!r} differs from model {req.model!r}")
        budget = self.budgets[req.model]
        n, tokens = len(line), req.input_tokens
        inputs = req.n_inputs if req.url == EMBEDDINGS_URL else 0  # the inputs limit is embeddings-only
        limits = self.limits
        if w is None or (
            w.n_requests >= limits.max_requests_per_file
            or w.n_bytes + n > limits.max_bytes_per_file
            or (budget is not None and w.tokens + tokens > budget)
            or w.n_inputs + inputs > limits.max_embedding_inputs_per_file
        ):
            w = self._next_writer(req, n, inputs)
        w.add_rows([line], [cid], [req.item_id], [body_sha], [tokens], n, inputs, output_cap(req.url, req.body))

    def add_chunk(self, chunk: TemplateChunk) -> None:
        """Many requests of one template at once: the same files, bytes and checks as adding them one by one,
        with the per-request work done in bulk, a few thousand lines at a time (their buffers are reused, so
        memory stays flat however big the month)."""
        for start in range(0, len(chunk.custom_ids), _LINES_AT_ONCE):
            end = start + _LINES_AT_ONCE
            self._add_template_rows(dataclasses.replace(
                chunk, custom_ids=chunk.custom_ids[start:end], item_ids=chunk.item_ids[start:end],
                values=chunk.values[start:end], input_tokens=chunk.input_tokens[start:end]))

    def _add_template_rows(self, chunk: TemplateChunk) -> None:
        url, model, template = chunk.url, chunk.model, chunk.template
        cids, item_ids, tokens = chunk.custom_ids, chunk.item_ids, chunk.input_tokens
        if not cids:
            return
        unique = set(cids)
        if len(unique) != len(cids) or not self.seen.isdisjoint(unique):
            seen_here: set[str] = set()
            for cid in cids:
                if cid in self.seen or cid in seen_here:
                    raise ValueError(f"duplicate custom_id {cid!r}: every request needs its own id")
                seen_here.add(cid)
        self.seen |= unique
        if template.body.get("model") != model:
            raise ValueError(f"{cids[0]}: body model {template.body.get('model')!r} differs from model {model!r}")
        # Each line is built from the template's pieces in one join, and the body hashed from the prefix's state:
        # no body is materialised on its own (the bytes are the same).
        dumps, body_sha = orjson.dumps, template.sha256_hex
        value_jsons = [dumps(value) for value in chunk.values]
        shas = [body_sha(value_json) for value_json in value_jsons]
        if self.keep is not None:
            kept = [i for i, (item_id, sha) in enumerate(zip(item_ids, shas, strict=True)) if self.keep(item_id, sha)]
            if len(kept) < len(cids):
                kept_set = set(kept)
                self.skipped += [SkippedRequest(cids[i], item_ids[i], shas[i], tokens[i])
                                 for i in range(len(cids)) if i not in kept_set]
                cids, item_ids, tokens = [cids[i] for i in kept], [item_ids[i] for i in kept], \
                    [tokens[i] for i in kept]
                value_jsons, shas = [value_jsons[i] for i in kept], [shas[i] for i in kept]
            if not cids:
                return
        w = self._writer(cids[0], url, model)
        head = b',"method":"POST","url":' + self.url_json[url] + b',"body":' + template.prefix
        tail = template.suffix + b"}\n"
        lines = [b"".join((b'{"custom_id":', dumps(cid), head, value_json, tail)) for cid, value_json in zip(
            cids, value_jsons, strict=True)]
        del value_jsons
        budget = self.budgets[model]
        limits = self.limits
        max_requests, max_bytes, max_inputs = (limits.max_requests_per_file, limits.max_bytes_per_file,
                                               limits.max_embedding_inputs_per_file)
        per_inputs = chunk.n_inputs if url == EMBEDDINGS_URL else 0
        cap = output_cap(url, template.shared)
        start, total = 0, len(lines)
        while start < total:
            if w is None:
                n_req = n_bytes = n_tok = n_inp = 0
            else:
                n_req, n_bytes, n_tok, n_inp = w.n_requests, w.n_bytes, w.tokens, w.n_inputs
            end = start
            while end < total:
                size, tok = len(lines[end]), tokens[end]
                if w is None or n_req >= max_requests or n_bytes + size > max_bytes or (
                        budget is not None and n_tok + tok > budget) or n_inp + per_inputs > max_inputs:
                    break
                n_req, n_bytes, n_tok, n_inp = n_req + 1, n_bytes + size, n_tok + tok, n_inp + per_inputs
                end += 1
            if end > start and w is not None:
                w.add_rows(lines[start:end], cids[start:end], item_ids[start:end], shas[start:end],
                           tokens[start:end], n_bytes - w.n_bytes, n_inp - w.n_inputs,
                           None if cap is None else cap * (end - start))
            if end < total:
                req = PreparedRequest(cids[end], url, model, SplicedBody(template, ""), tokens[end], chunk.n_inputs,
                                      item_ids[end])
                w = self._next_writer(req, len(lines[end]), per_inputs)
            start = end

    def finish(self) -> list[RequestFile]:
        for w in self.writers.values():
            self.done.append(w.finish())
        self.writers.clear()
        self.done.sort(key=_file_order)
        return self.done

    def discard(self) -> None:
        for w in self.writers.values():
            w.discard()
        if not self.content_addressed:  # content-addressed files may be shared with an earlier plan: keep them
            for f in self.done:
                f.path.unlink(missing_ok=True)


def _file_order(f: RequestFile) -> tuple[str, str]:
    head, index = f.path.stem.rsplit("-", 1)
    return head, index.zfill(8)


def _check_fits(req: PreparedRequest, n_bytes: int, budget: int | None, inputs: int, limits: BatchLimits) -> None:
    """A request that alone breaks a whole-file limit can never be written: say what to do."""
    if n_bytes > limits.max_bytes_per_file:
        raise ValueError(
            f"request {req.custom_id!r} is {n_bytes} bytes as a JSONL line, over the per-file limit of "
            f"{limits.max_bytes_per_file} bytes: shorten or split its input"
        )
    if budget is not None and req.input_tokens > budget:
        raise ValueError(
            f"request {req.custom_id!r} has {req.input_tokens} input tokens, over the per-file token "
            f"budget of {budget} for {req.model}: shorten its input or raise the budget in BatchLimits"
        )
    if inputs > limits.max_embedding_inputs_per_file:
        raise ValueError(
            f"request {req.custom_id!r} embeds {inputs} inputs, over the per-file limit of "
            f"{limits.max_embedding_inputs_per_file}: send fewer inputs per request"
        )


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


def reread_requests(path: Path, url: str, model: str,
                    wanted: Mapping[str, tuple[str, int]]) -> Iterator[PreparedRequest]:
    """The requests of a written file whose custom_id is in ``wanted`` (custom_id -> (item_id, input tokens)),
    exactly as written: their bodies serialise to the same bytes, so they keep their body hashes."""
    embeddings = url == EMBEDDINGS_URL
    with open(path, "rb") as handle:
        for raw in handle:
            line = orjson.loads(raw)
            match = wanted.get(line["custom_id"])
            if match is None:
                continue
            body = line["body"]
            inputs = body.get("input") if embeddings else None
            yield PreparedRequest(line["custom_id"], line["url"], model, body, int(match[1] or 0),
                                  len(inputs) if isinstance(inputs, list) else 1, match[0])

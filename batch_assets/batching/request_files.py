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
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Final, TypeVar

import orjson

from batch_assets.batching.protocol import (
    CHAT_COMPLETIONS_URL,
    EMBEDDINGS_URL,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    RESPONSES_URL,
    SUPPORTED_URLS,
)
from batch_assets.batching.requests import chat_body, custom_ids_for, embedding_body, responses_body
from batch_assets.batching.templates import HOLE, BodyTemplate, Conversations, SplicedBody
from batch_assets.batching.tokens import count_chat_tokens, count_responses_tokens, count_text_tokens

_PREPARE_CHUNK: Final = 65_536
_Chunk = TypeVar("_Chunk")
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


# A request's body -> does it still need an answer? (given the request and its body's sha256)
KeepRequest = Callable[[PreparedRequest, str], bool]
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
                 "item_ids", "body_shas", "digest", "content_addressed", "output_cap", "stem", "request_tokens")

    def __init__(self, path: Path, url: str, model: str, *, content_addressed: bool = False, stem: str = "") -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self):x}.tmp")
        self.fh: BinaryIO = open(self.tmp, "wb", buffering=1 << 20)  # closed in finish() or discard()
        self.url, self.model = url, model
        self.n_requests = self.n_bytes = self.tokens = self.n_inputs = 0
        self.ids: list[str] = []
        self.item_ids: list[str] = []
        self.body_shas: list[str] = []
        self.request_tokens: list[int] = []
        self.digest = hashlib.sha256()
        self.content_addressed, self.stem = content_addressed, stem
        self.output_cap: int | None = 0

    def write(self, line: bytes) -> None:
        self.fh.write(line)
        self.digest.update(line)

    def finish(self) -> RequestFile:
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
    requests for which ``keep(request, body_sha256)`` is False left out and returned as ``skipped``."""
    return _write(requests, out_dir, limits=limits, file_stem=file_stem, keep=keep, content_addressed=True)


def _write(
    requests: Iterable[PreparedRequest], out_dir: Path, *, limits: BatchLimits, file_stem: str,
    keep: KeepRequest | None, content_addressed: bool,
) -> PlannedFiles:
    if not file_stem or _UNSAFE_NAME_CHARS.search(file_stem):
        raise ValueError(f"file_stem {file_stem!r} must be non-empty and use only [A-Za-z0-9._-]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[tuple[str, str], _Writer] = {}
    next_index: dict[str, int] = {}
    done: list[RequestFile] = []
    seen: set[str] = set()
    max_requests, max_bytes = limits.max_requests_per_file, limits.max_bytes_per_file
    max_inputs = limits.max_embedding_inputs_per_file
    budgets: dict[str, int | None] = {}
    url_json: dict[str, bytes] = {}
    skipped: list[SkippedRequest] = []
    dumps = orjson.dumps
    sha256 = hashlib.sha256
    try:
        for req in requests:
            cid = req.custom_id
            if cid in seen:
                raise ValueError(f"duplicate custom_id {cid!r}: every request needs its own id")
            seen.add(cid)
            body = req.body_json or dumps(req.body)
            body_sha = sha256(body).hexdigest()
            if keep is not None and not keep(req, body_sha):
                skipped.append(SkippedRequest(cid, req.item_id, body_sha, req.input_tokens))
                continue
            # The line is built around the body's bytes, so the body is serialised (and hashed) once.
            key = (req.url, req.model)
            w = writers.get(key)
            if w is None:
                if req.url not in SUPPORTED_URLS:
                    raise ValueError(f"{cid}: unsupported endpoint {req.url!r}; supported: {SUPPORTED_URLS}")
                budgets[req.model] = limits.token_budget(req.model)
                url_json[req.url] = dumps(req.url)
            line = b"".join((b'{"custom_id":', dumps(cid), b',"method":"POST","url":', url_json[req.url],
                             b',"body":', body, b"}\n"))
            if req.body.get("model") != req.model:
                raise ValueError(f"{cid}: body model {req.body.get('model')!r} differs from model {req.model!r}")
            budget = budgets[req.model]
            n, tokens = len(line), req.input_tokens
            inputs = req.n_inputs if req.url == EMBEDDINGS_URL else 0  # the inputs limit is embeddings-only
            if w is None or (
                w.n_requests >= max_requests
                or w.n_bytes + n > max_bytes
                or (budget is not None and w.tokens + tokens > budget)
                or w.n_inputs + inputs > max_inputs
            ):
                _check_fits(req, n, budget, inputs, limits)
                if w is not None:
                    done.append(w.finish())
                index = next_index.get(safe := sanitize_model_name(req.model), 0)
                next_index[safe] = index + 1
                w = writers[key] = _Writer(out_dir / f"{file_stem}-{safe}-{index:03d}.jsonl", req.url, req.model,
                                           content_addressed=content_addressed, stem=f"{file_stem}-{safe}")
            w.write(line)
            w.n_requests += 1
            w.n_bytes += n
            w.tokens += tokens
            w.n_inputs += inputs
            w.ids.append(cid)
            w.item_ids.append(req.item_id)
            w.body_shas.append(body_sha)
            w.request_tokens.append(tokens)
            if w.output_cap is not None:
                cap = output_cap(req.url, req.body)
                w.output_cap = None if cap is None else w.output_cap + cap
        for w in writers.values():
            done.append(w.finish())
        writers.clear()
        done.sort(key=_file_order)
    except BaseException:
        for w in writers.values():
            w.discard()
        if not content_addressed:  # content-addressed files may be shared with an earlier plan: keep them
            for f in done:
                f.path.unlink(missing_ok=True)
        raise
    return PlannedFiles(done, skipped)


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


def _check_lengths(ids: Sequence[str], values: Sequence[Any], what: str) -> None:
    if len(ids) != len(values):
        raise ValueError(f"got {len(ids)} ids but {len(values)} {what}")


def _counted_chunks(n: int, chunk_at: Callable[[int], _Chunk], count: Callable[[_Chunk], list[int]]
                    ) -> Iterator[tuple[int, _Chunk, list[int]]]:
    """The n items in chunks (start, chunk, token counts). The next chunk is counted in a background thread while
    the caller writes this one (tiktoken releases the GIL), so counting and writing overlap on two cores."""
    with ThreadPoolExecutor(1, thread_name_prefix="count-ahead") as ahead:
        pending: tuple[int, _Chunk, Future[list[int]]] | None = None
        for start in range(0, n, _PREPARE_CHUNK):
            chunk = chunk_at(start)
            counting = ahead.submit(count, chunk)
            if pending is not None:
                yield pending[0], pending[1], pending[2].result()
            pending = (start, chunk, counting)
        if pending is not None:
            yield pending[0], pending[1], pending[2].result()


def prepare_embedding_requests(
    ids: Sequence[str],
    texts: Sequence[str],
    model: str,
    *,
    dimensions: int | None = None,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
) -> Iterator[PreparedRequest]:
    """Embedding requests for ``(id, text)`` rows, one text per request, tokens counted exactly.

    Ids, custom ids and empty texts are checked now; the requests are produced lazily, in chunks
    (token counting runs in parallel per chunk), so they stream into :func:`write_request_files`.
    """
    _check_lengths(ids, texts, "texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise ValueError(
                f"text of item {ids[i]!r} is empty: OpenAI rejects empty embedding inputs; "
                "drop or replace empty documents first"
            )
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    template = BodyTemplate(embedding_body(model, HOLE, dimensions))  # validates model and dimensions once

    def generate() -> Iterator[PreparedRequest]:
        for start, chunk, counts in _counted_chunks(
                len(texts), lambda at: texts[at : at + _PREPARE_CHUNK],
                lambda chunk: count_text_tokens(chunk, model, num_threads=num_threads)):
            for item_id, cid, text, tokens in zip(ids[start : start + _PREPARE_CHUNK],
                                                  custom_ids[start : start + _PREPARE_CHUNK], chunk, counts,
                                                  strict=True):
                yield PreparedRequest(cid, EMBEDDINGS_URL, model, SplicedBody(template, text), tokens, 1, item_id,
                                      template.render(text))

    return generate()


def prepare_chat_requests(
    ids: Sequence[str],
    messages_list: Sequence[Sequence[Mapping[str, Any]]],
    model: str,
    *,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
    **params: Any,
) -> Iterator[PreparedRequest]:
    """Chat requests for ``(id, messages)`` rows; ``params`` go to :func:`chat_body`
    (max_tokens, max_completion_tokens, temperature, seed, response_format). Lazy like
    :func:`prepare_embedding_requests`; ids and custom ids are checked now, bodies as they are built.

    Given :class:`~batch_assets.batching.templates.Conversations` (shared first messages, one user message per
    item), the body is built, checked and serialised once and each request only adds its text: what the shipped
    chat pipelines pass.
    """
    _check_lengths(ids, messages_list, "conversations")
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    if isinstance(messages_list, Conversations):
        return _shared_head_chat_requests(ids, custom_ids, messages_list, model, num_threads, params)
    chat_body(model, [{"role": "user", "content": "x"}], **params)  # validates params once

    def generate() -> Iterator[PreparedRequest]:
        for start, chunk, counts in _counted_chunks(
                len(messages_list), lambda at: messages_list[at : at + _PREPARE_CHUNK],
                lambda chunk: count_chat_tokens(chunk, model, num_threads=num_threads,
                                                response_format=params.get("response_format"),
                                                tools=params.get("tools"))):
            for item_id, cid, messages, tokens in zip(ids[start : start + _PREPARE_CHUNK],
                                                      custom_ids[start : start + _PREPARE_CHUNK], chunk, counts,
                                                      strict=True):
                yield PreparedRequest(cid, CHAT_COMPLETIONS_URL, model, chat_body(model, messages, **params), tokens, 1,
                                      item_id)

    return generate()


def _shared_head_chat_requests(ids: Sequence[str], custom_ids: Sequence[str], conversations: Conversations,
                               model: str, num_threads: int | None, params: Mapping[str, Any]
                               ) -> Iterator[PreparedRequest]:
    """Chat requests whose conversations differ only in their last user message (see prepare_chat_requests)."""
    last = {"role": "user", "content": HOLE}
    template = BodyTemplate(chat_body(model, [*conversations.head, last], **params))  # checks head and params once
    # Tokens of all but the user's text, by the same formula: the empty text has no tokens.
    fixed = count_chat_tokens([[*conversations.head, {**last, "content": ""}]], model,
                              response_format=params.get("response_format"), tools=params.get("tools"))[0]

    def contents_at(start: int) -> list[str]:
        contents = conversations[start : start + _PREPARE_CHUNK].user_contents()
        for i, content in enumerate(contents):
            if not isinstance(content, str):
                raise ValueError(f"conversation {start + i}: the user message must be a str, got "
                                 f"{type(content).__name__}")
        return contents

    def generate() -> Iterator[PreparedRequest]:
        for start, contents, counts in _counted_chunks(
                len(conversations), contents_at,
                lambda chunk: count_text_tokens(chunk, model, num_threads=num_threads)):
            for item_id, cid, content, tokens in zip(ids[start : start + _PREPARE_CHUNK],
                                                     custom_ids[start : start + _PREPARE_CHUNK], contents, counts,
                                                     strict=True):
                yield PreparedRequest(cid, CHAT_COMPLETIONS_URL, model, SplicedBody(template, content),
                                      fixed + tokens, 1, item_id, template.render(content))

    return generate()


def prepare_responses_requests(
    ids: Sequence[str],
    inputs: Sequence[str | Sequence[Mapping[str, Any]]],
    model: str,
    *,
    instructions: str | None = None,
    custom_id_prefix: str = "",
    num_threads: int | None = None,
    **params: Any,
) -> Iterator[PreparedRequest]:
    """Responses API requests for ``(id, input)`` rows; ``input`` is a text or a list of messages,
    ``instructions`` the system prompt they share, ``params`` go to :func:`responses_body`
    (max_output_tokens, temperature, text_format). Tokens are counted as in
    :func:`~batch_assets.batching.tokens.count_responses_tokens`. Lazy like
    :func:`prepare_chat_requests`; ids, custom ids and params are checked now, bodies as they are built.
    """
    _check_lengths(ids, inputs, "inputs")
    custom_ids = custom_ids_for(ids, custom_id_prefix)
    # Checks params once; a text input is spliced into this body (a list of messages is built per request).
    template = BodyTemplate(responses_body(model, HOLE, instructions=instructions, **params))
    text_format = params.get("text_format")
    # Tokens of all but the text, by the same formula: the empty text has no tokens.
    fixed = count_responses_tokens([""], model, instructions=instructions, text_format=text_format)[0]

    def count(chunk: Sequence[str | Sequence[Mapping[str, Any]]]) -> list[int]:
        texts = [input_ for input_ in chunk if isinstance(input_, str) and input_]
        if len(texts) == len(chunk):
            return [fixed + n for n in count_text_tokens(texts, model, num_threads=num_threads)]
        return count_responses_tokens(chunk, model, instructions=instructions, text_format=text_format,
                                      num_threads=num_threads)

    def generate() -> Iterator[PreparedRequest]:
        for start, chunk, counts in _counted_chunks(len(inputs), lambda at: inputs[at : at + _PREPARE_CHUNK], count):
            for item_id, cid, input_, tokens in zip(ids[start : start + _PREPARE_CHUNK],
                                                    custom_ids[start : start + _PREPARE_CHUNK], chunk, counts,
                                                    strict=True):
                if isinstance(input_, str) and input_:
                    yield PreparedRequest(cid, RESPONSES_URL, model, SplicedBody(template, input_), tokens, 1,
                                          item_id, template.render(input_))
                else:
                    body = responses_body(model, input_, instructions=instructions, **params)
                    yield PreparedRequest(cid, RESPONSES_URL, model, body, tokens, 1, item_id)

    return generate()


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

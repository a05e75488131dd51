"""The files one call of :func:`~batch_assets.batching.request_files.plan_request_files` writes: one open writer per
(url, model), rolled over before a line would break a limit.

Lines are built on the calling thread; hashing them into the file's sha256, writing them and completing each file
happen in one background thread, in order, a megabyte or more at a time (hashlib and file writes release the
GIL for big buffers), so the caller never waits for a file to be flushed. Requests of one body template
(:class:`TemplateChunk`) are written in bulk: their lines, sizes and body hashes are made by C-level maps over
the chunk's columns and the split points found from cumulative sums, the same files and bytes as adding the
requests one at a time.
"""

from __future__ import annotations

import hashlib
import os
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import accumulate, chain, repeat
from operator import add
from pathlib import Path
from typing import BinaryIO, Final

import orjson

from batch_assets.batching.protocol import EMBEDDINGS_URL, SUPPORTED_URLS
from batch_assets.batching.request_types import (
    BatchLimits,
    KeepRequest,
    PreparedRequest,
    RequestFile,
    SkippedRequest,
    TemplateChunk,
    output_cap,
    request_rows,
    sanitize_model_name,
)
from batch_assets.batching.templates import SplicedBody

_FLUSH_BYTES: Final = 1 << 20
_LINES_AT_ONCE: Final = 8192
_MAX_QUEUED: Final = 4  # buffers waiting for the background thread (each up to _LINES_AT_ONCE lines): bounded memory
_LINE_START: Final = b'{"custom_id":'


class _Sink:
    """One background thread that hashes and writes buffers, and completes files, in the order they are given."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[Future[None]] = deque()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="request-files")
        return self._pool

    def put(self, writer: _Writer, data: bytes) -> None:
        self._queued.append(self._executor().submit(writer.consume, data))
        while len(self._queued) > _MAX_QUEUED:
            self._queued.popleft().result()

    def complete(self, writer: _Writer) -> Future[RequestFile]:
        """The writer's file, once every buffer given before is written (the caller goes on meanwhile)."""
        return self._executor().submit(writer.complete)

    def close(self) -> None:
        """Stops: what is queued and not started is dropped, what runs is waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._queued.clear()


class _Writer:
    __slots__ = ("path", "tmp", "fh", "url", "model", "n_requests", "n_bytes", "tokens", "n_inputs", "ids",
                 "item_ids", "body_shas", "digest", "content_addressed", "output_cap", "stem", "request_tokens",
                 "pending", "sink")

    def __init__(self, path: Path, url: str, model: str, sink: _Sink, *, content_addressed: bool = False,
                 stem: str = "") -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self):x}.tmp")
        self.fh: BinaryIO = open(self.tmp, "wb")  # closed in finish() or discard()
        self.pending = bytearray()
        self.sink = sink
        self.url, self.model = url, model
        self.n_requests = self.n_bytes = self.tokens = self.n_inputs = 0
        self.ids: list[str] = []
        self.item_ids: list[str] = []
        self.body_shas: list[str] = []
        self.request_tokens: list[int] = []
        self.digest = hashlib.sha256()
        self.content_addressed, self.stem = content_addressed, stem
        self.output_cap: int | None = 0

    def consume(self, data: bytes) -> None:
        """In the sink's thread: the file's hash and its bytes, in one pass over the buffer."""
        self.digest.update(data)
        self.fh.write(data)

    def add_rows(self, data: bytes, ids: list[str], item_ids: Sequence[str], body_shas: list[str],
                 tokens: Sequence[int], n_bytes: int, n_inputs: int, output_tokens_cap: int | None) -> None:
        """Appends request lines (``data``, ``n_bytes`` of them) and what the file records of them;
        ``output_tokens_cap`` is their summed cap."""
        if len(ids) == 1:
            self.pending += data
            if len(self.pending) >= _FLUSH_BYTES:
                self._flush()
        else:
            self._flush()
            self.sink.put(self, data)
        self.n_requests += len(ids)
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
        if self.pending:
            self.sink.put(self, bytes(self.pending))
            self.pending.clear()

    def finish_later(self) -> Future[RequestFile]:
        """Its file, completed by the sink once its last lines are written."""
        self._flush()
        return self.sink.complete(self)

    def complete(self) -> RequestFile:
        """In the sink's thread, after the file's last buffer: closes, names and records the file."""
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
        rows = request_rows(self.ids, self.item_ids, self.body_shas, self.request_tokens)
        self.ids, self.item_ids, self.body_shas, self.request_tokens = [], [], [], []  # the file's columns hold them
        return RequestFile(self.path, self.url, self.model, self.n_requests, self.n_bytes, self.tokens, self.n_inputs,
                           rows, sha, self.output_cap)

    def discard(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class FileSet:
    """The files one call writes: one open writer per (url, model), rolled over before a line breaks a limit.
    Call :meth:`finish` (the files) or :meth:`discard` (on error) once."""

    def __init__(self, out_dir: Path, limits: BatchLimits, file_stem: str, keep: KeepRequest | None,
                 content_addressed: bool) -> None:
        self.out_dir, self.limits, self.file_stem = out_dir, limits, file_stem
        self.keep, self.content_addressed = keep, content_addressed
        self.writers: dict[tuple[str, str], _Writer] = {}
        self.next_index: dict[str, int] = {}
        self.finishing: list[tuple[_Writer, Future[RequestFile]]] = []  # files the sink completes, in order
        self.seen: set[str] = set()
        self.budgets: dict[str, int | None] = {}
        self.url_json: dict[str, bytes] = {}
        self.skipped: list[SkippedRequest] = []
        self.sink = _Sink()

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
            self.finishing.append((current, current.finish_later()))
        index = self.next_index.get(safe := sanitize_model_name(req.model), 0)
        self.next_index[safe] = index + 1
        w = self.writers[(req.url, req.model)] = _Writer(
            self.out_dir / f"{self.file_stem}-{safe}-{index:03d}.jsonl", req.url, req.model, self.sink,
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
        line = b"".join((_LINE_START, orjson.dumps(cid), b',"method":"POST","url":', self.url_json[req.url],
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
        w.add_rows(line, [cid], [req.item_id], [body_sha], [tokens], n, inputs, output_cap(req.url, req.body))

    def add_chunk(self, chunk: TemplateChunk) -> None:
        """Many requests of one template at once: the same files, bytes and checks as adding them one by one,
        a few thousand lines at a time (memory stays flat however big the month)."""
        for start in range(0, len(chunk.custom_ids), _LINES_AT_ONCE):
            end = start + _LINES_AT_ONCE
            self._add_template_rows(chunk, chunk.custom_ids[start:end], chunk.item_ids[start:end],
                                    chunk.values[start:end], chunk.input_tokens[start:end])

    def _add_template_rows(self, chunk: TemplateChunk, cids: list[str], item_ids: list[str], values: list[str],
                           tokens: list[int]) -> None:
        url, model, template = chunk.url, chunk.model, chunk.template
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
        # No body is materialised on its own: each is hashed from the template prefix's state, each line joined
        # from the template's pieces (the same bytes).
        value_jsons = list(map(orjson.dumps, values))
        shas = list(map(template.sha256_hex, value_jsons))
        if self.keep is not None:
            keep = list(map(self.keep, item_ids, shas))
            if not all(keep):
                self.skipped += [SkippedRequest(cid, item_id, sha, n) for cid, item_id, sha, n, kept in zip(
                    cids, item_ids, shas, tokens, keep, strict=True) if not kept]
                rows = [i for i, kept in enumerate(keep) if kept]
                cids, item_ids, tokens = [cids[i] for i in rows], [item_ids[i] for i in rows], [tokens[i] for i in rows]
                value_jsons, shas = [value_jsons[i] for i in rows], [shas[i] for i in rows]
            if not cids:
                return
        w = self._writer(cids[0], url, model)
        cid_jsons = list(map(orjson.dumps, cids))
        head = b',"method":"POST","url":' + self.url_json[url] + b',"body":' + template.prefix
        tail = template.suffix + b"}\n"
        fixed = len(_LINE_START) + len(head) + len(tail)
        sizes = [n + fixed for n in map(add, map(len, cid_jsons), map(len, value_jsons))]
        budget = self.budgets[model]
        per_inputs = chunk.n_inputs if url == EMBEDDINGS_URL else 0
        cap = output_cap(url, template.shared)
        start, total = 0, len(cids)
        while start < total:
            end = start if w is None else start + self._rows_that_fit(w, sizes, tokens, start, budget, per_inputs)
            if end > start and w is not None:
                data = b"".join(chain.from_iterable(zip(repeat(_LINE_START), cid_jsons[start:end], repeat(head),
                                                        value_jsons[start:end], repeat(tail))))
                w.add_rows(data, cids[start:end], item_ids[start:end], shas[start:end], tokens[start:end],
                           len(data), per_inputs * (end - start), None if cap is None else cap * (end - start))
            if end < total:
                req = PreparedRequest(cids[end], url, model, SplicedBody(template, ""), tokens[end], chunk.n_inputs,
                                      item_ids[end])
                w = self._next_writer(req, sizes[end], per_inputs)
            start = end

    def _rows_that_fit(self, w: _Writer, sizes: list[int], tokens: list[int], start: int, budget: int | None,
                       per_inputs: int) -> int:
        """How many of the rows from ``start`` fit in ``w`` under every limit (the longest prefix that does)."""
        limits = self.limits
        n = min(len(sizes) - start, max(0, limits.max_requests_per_file - w.n_requests))
        if per_inputs:
            n = min(n, max(0, (limits.max_embedding_inputs_per_file - w.n_inputs) // per_inputs))
        if w.n_bytes + sum(sizes[start : start + n]) > limits.max_bytes_per_file:
            n = bisect_right(list(accumulate(sizes[start : start + n])), limits.max_bytes_per_file - w.n_bytes)
        if budget is not None and w.tokens + sum(tokens[start : start + n]) > budget:
            n = bisect_right(list(accumulate(tokens[start : start + n])), budget - w.tokens)
        return n

    def finish(self) -> list[RequestFile]:
        try:
            self.finishing += [(w, w.finish_later()) for w in self.writers.values()]
            self.writers.clear()
            done = [future.result() for _, future in self.finishing]
        finally:
            self.sink.close()
        done.sort(key=_file_order)
        return done

    def discard(self) -> None:
        self.sink.close()
        for w in self.writers.values():
            w.discard()
        for w, future in self.finishing:
            if not future.done() or future.cancelled() or future.exception() is not None:
                w.discard()
            elif not self.content_addressed:  # content-addressed files may be shared with an earlier plan: keep them
                future.result().path.unlink(missing_ok=True)


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

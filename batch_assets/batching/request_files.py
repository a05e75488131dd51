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
arrive as :class:`TemplateChunk` columns and are written in bulk (the same files and bytes). What the files are
made of is in :mod:`batch_assets.batching.request_types` (re-exported here), the writing in
:mod:`batch_assets.batching.file_set`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import orjson

from batch_assets.batching.file_set import FileSet
from batch_assets.batching.protocol import EMBEDDINGS_URL
from batch_assets.batching.request_types import (
    UNSAFE_NAME_CHARS,
    BatchLimits,
    ChunkedRequests,
    KeepRequest,
    PlannedFiles,
    PreparedRequest,
    RequestFile,
    SkippedRequest,
    TemplateChunk,
    output_cap,
    sanitize_model_name,
)

__all__ = ["BatchLimits", "ChunkedRequests", "KeepRequest", "PlannedFiles", "PreparedRequest", "RequestFile",
           "SkippedRequest", "TemplateChunk", "output_cap", "plan_request_files", "reread_requests",
           "sanitize_model_name", "write_request_files"]


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
    if not file_stem or UNSAFE_NAME_CHARS.search(file_stem):
        raise ValueError(f"file_stem {file_stem!r} must be non-empty and use only [A-Za-z0-9._-]")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = FileSet(out_dir, limits, file_stem, keep, content_addressed)
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

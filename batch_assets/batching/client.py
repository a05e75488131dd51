"""A thin client over the official ``openai`` SDK for the Files + Batches API.

It adds only what the SDK does not do: metadata validation before any request, streamed and atomic
downloads, and a metadata look-up used to adopt a batch created before a crash. Retries on 429/5xx
and connection errors are the SDK's own (``max_retries`` on the ``openai.OpenAI`` it is given);
nothing here retries a second time.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import openai
import orjson
from openai.types import Batch, FileObject

from batch_assets.batching.protocol import (
    COMPLETION_WINDOW,
    METADATA_KEY_MAX_LEN,
    METADATA_MAX_PAIRS,
    METADATA_VALUE_MAX_LEN,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "MISSING_KEY_MESSAGE",
    "BatchClient",
    "BatchPage",
    "MissingApiKeyError",
    "openai_client_from_env",
    "validate_metadata",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The SDK's own default is 2; batch work is not latency sensitive, so ride out longer 429/5xx spells.
DEFAULT_MAX_RETRIES = 5
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
MISSING_KEY_MESSAGE = (
    "OPENAI_API_KEY is not set: set it, or use the local engine with BATCH_ASSETS_PROVIDER=local"
)


class MissingApiKeyError(RuntimeError):
    """Raised when the OpenAI provider is selected but no API key is configured."""

    def __init__(self) -> None:
        super().__init__(MISSING_KEY_MESSAGE)


def openai_client_from_env(
    env: Mapping[str, str] | None = None,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout: float = 600.0,
) -> openai.OpenAI:
    """Build the ``openai.OpenAI`` client for provider "openai" from environment variables.

    Reads ``OPENAI_API_KEY`` (required), ``OPENAI_BASE_URL`` (optional; any OpenAI-compatible batch
    endpoint), ``OPENAI_ORG_ID`` and ``OPENAI_PROJECT_ID`` (optional) from ``env`` (default
    ``os.environ``). The key never appears in an exception or a log line.
    """
    env = os.environ if env is None else env
    api_key = (env.get("OPENAI_API_KEY") or "").strip()
    if not api_key:
        raise MissingApiKeyError()
    base_url = (env.get("OPENAI_BASE_URL") or "").strip() or DEFAULT_BASE_URL
    return openai.OpenAI(
        api_key=api_key,
        base_url=base_url,
        organization=(env.get("OPENAI_ORG_ID") or "").strip() or None,
        project=(env.get("OPENAI_PROJECT_ID") or "").strip() or None,
        max_retries=max_retries,
        timeout=timeout,
    )


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """Check batch metadata against the API's limits; raise ``ValueError`` saying what to change.

    Limits: at most 16 pairs, keys are strings of at most 64 characters, values are strings of
    at most 512 characters.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise ValueError(f"batch metadata must be a mapping of str to str, got {type(metadata).__name__}")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise ValueError(
            f"batch metadata has {len(metadata)} pairs; the Batch API allows at most {METADATA_MAX_PAIRS}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"batch metadata key {key!r} must be a str, got {type(key).__name__}")
        if len(key) > METADATA_KEY_MAX_LEN:
            raise ValueError(
                f"batch metadata key {key[:20]!r}... is {len(key)} characters; "
                f"the Batch API allows at most {METADATA_KEY_MAX_LEN}"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"batch metadata value for {key!r} must be a str, got {type(value).__name__}: "
                "convert it with str() first"
            )
        if len(value) > METADATA_VALUE_MAX_LEN:
            raise ValueError(
                f"batch metadata value for {key!r} is {len(value)} characters; "
                f"the Batch API allows at most {METADATA_VALUE_MAX_LEN}"
            )
    return dict(metadata)


@dataclass(frozen=True)
class BatchPage:
    """One page of the batch list: every id on it, in order, and the batches that were asked for."""

    ids: builtins.list[str]
    has_more: bool | None
    batches: builtins.list[Batch]


class BatchClient:
    """Files + Batches operations over one ``openai.OpenAI`` client (OpenAI or any compatible endpoint)."""

    def __init__(self, openai_client: openai.OpenAI) -> None:
        self._client = openai_client

    @property
    def openai(self) -> openai.OpenAI:
        """The underlying SDK client."""
        return self._client

    def close(self) -> None:
        """Closes the SDK client's connections (and, for the local engine, its state store)."""
        self._client.close()

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def upload(self, path: Path) -> FileObject:
        """Upload a JSONL request file with ``purpose="batch"``; the file is streamed, not read whole."""
        with open(path, "rb") as fh:
            return self._client.files.create(file=fh, purpose="batch")

    def create(
        self,
        input_file_id: str,
        endpoint: str,
        *,
        metadata: Mapping[str, str] | None = None,
        completion_window: str = COMPLETION_WINDOW,
        max_retries: int | None = None,
    ) -> Batch:
        """Create a batch over an uploaded file. Metadata is validated before any request is made.

        ``max_retries=0`` turns the SDK's own retries off for this call: a create whose response was lost
        may have gone through, so the caller must look its idempotency key up before trying again.

        Note: a batch over the enqueued-token limit is created and later ends ``failed``; this does
        not raise for it.
        """
        checked = validate_metadata(metadata)
        kwargs: dict[str, Any] = {}
        if checked is not None:
            kwargs["metadata"] = checked
        sdk = self._client if max_retries is None else self._client.with_options(max_retries=max_retries)
        return sdk.batches.create(
            input_file_id=input_file_id,
            endpoint=cast(Any, endpoint),
            completion_window=cast(Any, completion_window),
            **kwargs,
        )

    def retrieve(self, batch_id: str) -> Batch:
        return self._client.batches.retrieve(batch_id)

    def list_page(self, *, limit: int = 100, after: str | None = None,
                  only: Container[str] | None = None) -> BatchPage:
        """One page of batches, newest first, starting right after the batch ``after`` (one API call).

        With ``only``, just those batches are built as SDK objects (the page's ids are all listed): building
        a hundred pydantic ``Batch`` objects per page costs more than the call when most belong to others.
        """
        kwargs: dict[str, Any] = {"limit": limit}
        if after is not None:
            kwargs["after"] = after
        raw = self._client.batches.with_raw_response.list(**kwargs)
        page = orjson.loads(raw.http_response.read())
        rows = page.get("data") or []
        return BatchPage(ids=[row["id"] for row in rows], has_more=page.get("has_more"),
                         batches=[Batch.model_validate(row) for row in rows if only is None or row["id"] in only])

    def list(self, *, limit: int = 100, after: str | None = None) -> Iterator[Batch]:
        """Every batch, newest first, fetching further pages (``after=<last id>``) as it is iterated."""
        kwargs: dict[str, Any] = {"limit": limit}
        if after is not None:
            kwargs["after"] = after
        yield from self._client.batches.list(**kwargs)

    def cancel(self, batch_id: str) -> Batch:
        return self._client.batches.cancel(batch_id)

    def download(self, file_id: str, dest: Path, *, durable: bool = True) -> int:
        """Stream a file's content to ``dest`` and return the number of bytes written.

        Written to a temporary file beside ``dest`` and renamed into place, so ``dest`` is either
        the complete file or untouched. Memory use is one chunk, whatever the file size.
        ``durable=False`` skips the fsync, for files read once and deleted (a crash only means
        downloading again): syncing a 1 GB file took longer than downloading it.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        written = 0
        try:
            stream = self._client.files.with_streaming_response.content(file_id)
            with stream as response, open(tmp, "wb") as fh:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    fh.write(chunk)
                    written += len(chunk)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def delete_file(self, file_id: str) -> None:
        self._client.files.delete(file_id)

    def find_batches_by_metadata(
        self, key: str, value: str, *, created_after: int | None = None
    ) -> builtins.list[Batch]:  # `list` alone would name the method above
        """Batches whose ``metadata[key] == value``, newest first (e.g. an idempotency key).

        Pages through the batch list; with ``created_after`` (unix seconds) it stops at the first
        batch created before that time, since the API lists batches newest first.
        """
        found: builtins.list[Batch] = []
        for batch in self.list():
            if created_after is not None and batch.created_at < created_after:
                break
            if batch.metadata and batch.metadata.get(key) == value:
                found.append(batch)
        return found

"""The Files API routes of the local engine, as OpenAI's (purposes, pagination, expiry, limits).

- Upload purposes are OpenAI's (``CreateFileRequest.purpose``); a ``batch`` file must be named
  ``*.jsonl`` (OpenAI answers "Invalid file format for Batch API. Must be .jsonl"; bad lines inside
  are reported later, by the batch's validation, as on OpenAI).
- Size: a ``batch`` file is at most 200 MB (the Batch API's limit), any other file 512 MB (the
  Files API's); the limit is enforced while the body streams in (413, partial file deleted). When
  ``purpose`` arrives after the file part (form field order is the client's choice), the 512 MB
  limit applies while streaming and the 200 MB one right after.
- ``expires_at``: 30 days after upload for ``batch`` files, else never, unless ``expires_after``
  (``anchor: created_at``, 3600..2592000 seconds) says otherwise. Expired files answer 404.
- ``GET /v1/files``: ``purpose``, ``limit`` (1..10,000, default 10,000), ``order`` (``asc`` /
  ``desc`` by upload time, default ``desc``), ``after`` (a file id), with ``first_id``,
  ``last_id`` and ``has_more``.
"""

from __future__ import annotations

from collections.abc import Iterator

from batch_assets.batching.protocol import MAX_FILE_BYTES
from batch_assets.local.errors import (
    ApiError,
    InvalidRequest,
    bounded_int,
    invalid_type,
    invalid_value,
    missing_parameter,
    query_int,
)
from batch_assets.local.multipart_upload import UploadError, UploadTooLarge, receive_upload
from batch_assets.local.store import StateStore, StoredFile, new_id
from batch_assets.local.wire import ApiRequest, ApiResponse, json_response

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_UPLOAD_BYTES = 512_000_000  # "Individual files can be up to 512 MB" (decimal: the safe side)
MAX_BATCH_UPLOAD_BYTES = MAX_FILE_BYTES  # "The Batch API only supports .jsonl files up to 200 MB"
EXPIRES_AFTER_SECONDS = (3600, 2_592_000)  # FileExpirationAfter.seconds: 1 hour .. 30 days
MAX_LIST_LIMIT = 10_000
FILE_CHUNK_BYTES = 1 << 20


def _max_file_bytes(fields: dict[str, str]) -> int:
    return MAX_BATCH_UPLOAD_BYTES if fields.get("purpose") == "batch" else MAX_UPLOAD_BYTES


def _check_purpose(purpose: str) -> None:
    if purpose not in UPLOAD_PURPOSES:
        raise invalid_value("purpose", purpose, UPLOAD_PURPOSES)


def _check_field(name: str, value: str) -> None:
    """Refuses a bad purpose as soon as it arrives, before the file part is read."""
    if name == "purpose":
        _check_purpose(value)


def _expires_after(fields: dict[str, str]) -> int | None:
    """Seconds from `expires_after[anchor]` / `expires_after[seconds]` form fields (how the SDKs send it)."""
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise missing_parameter("expires_after.anchor")
    if anchor != "created_at":
        raise invalid_value("expires_after.anchor", anchor, ("created_at",))
    if seconds is None:
        raise missing_parameter("expires_after.seconds")
    try:
        value = int(seconds)
    except ValueError:
        raise invalid_type("expires_after.seconds", "an integer", seconds) from None
    low, high = EXPIRES_AFTER_SECONDS
    return bounded_int({"seconds": value}, "seconds", low, high, where="expires_after.")


class FilesRoutes:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def upload(self, request: ApiRequest) -> ApiResponse:
        file_id = new_id("file-")
        partial = self.store.file_path(file_id).with_suffix(".part")
        try:
            upload = receive_upload(request.headers.get("content-type", ""), request.body, partial,
                                    max_file_bytes=_max_file_bytes, on_field=_check_field)
        except UploadTooLarge as exc:
            raise ApiError(413, f"File is too large: the local engine, like OpenAI, accepts files of up to "
                           f"{exc.limit:,} bytes for this purpose (batch files: 200 MB; split the file).",
                           param="file", code="file_too_large") from None
        except UploadError as exc:
            raise InvalidRequest(f"Could not parse the multipart form: {exc}. Send multipart/form-data with a "
                                 "'file' part and a 'purpose' field.") from None
        try:
            stored = self._register(file_id, upload.fields, upload.filename, upload.file_bytes)
        except BaseException:  # refused (or failed to register): leave nothing behind
            partial.unlink(missing_ok=True)
            if self.store.get_file(file_id) is None:
                self.store.file_path(file_id).unlink(missing_ok=True)
            raise
        return json_response(stored.to_api())

    def _register(self, file_id: str, fields: dict[str, str], filename: str | None, size: int) -> StoredFile:
        if "purpose" not in fields:
            raise missing_parameter("purpose")
        purpose = fields["purpose"]
        _check_purpose(purpose)
        if filename is None:
            raise missing_parameter("file")
        if size > _max_file_bytes(fields):  # the purpose came after the file
            raise ApiError(413, f"File is too large: batch files are at most {MAX_BATCH_UPLOAD_BYTES:,} bytes "
                           "(200 MB); split the file.", param="file", code="file_too_large")
        if purpose == "batch" and not filename.lower().endswith(".jsonl"):
            raise InvalidRequest("Invalid file format for Batch API. Must be .jsonl")
        seconds = _expires_after(fields)
        self.store.file_path(file_id).with_suffix(".part").rename(self.store.file_path(file_id))
        stored = self.store.add_file(file_id, filename, purpose, expires_after=seconds)
        self.store.purge_expired_files()
        return stored

    def list(self, request: ApiRequest) -> ApiResponse:
        query = dict(request.query)
        limit = query_int(query, "limit", 1, MAX_LIST_LIMIT)
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise invalid_value("order", order, ("asc", "desc"))
        files, has_more = self.store.list_files(query.get("purpose"), after=query.get("after"),
                                                limit=MAX_LIST_LIMIT if limit is None else limit, order=order)
        data = [f.to_api() for f in files]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    def existing(self, file_id: str) -> StoredFile:
        stored = self.store.get_file(file_id)
        if stored is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    def get(self, request: ApiRequest, file_id: str) -> ApiResponse:
        return json_response(self.existing(file_id).to_api())

    def content(self, request: ApiRequest, file_id: str) -> ApiResponse:
        self.existing(file_id)
        path = self.store.file_path(file_id)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(FILE_CHUNK_BYTES):
                    yield chunk

        return ApiResponse(200, chunks(), {"content-type": "application/octet-stream",
                                           "content-length": str(path.stat().st_size)})

    def delete(self, request: ApiRequest, file_id: str) -> ApiResponse:
        if not self.store.delete_file(file_id):
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return json_response({"id": file_id, "object": "file", "deleted": True})

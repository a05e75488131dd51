"""The local Batch API: OpenAI's Files + Batches routes (and the synchronous endpoints) over a state folder.

Framework-free on purpose: `LocalBatchAPI.handle` takes a method, path, headers and a body stream and
returns status, headers and a body. `transport.py` hands it to the openai SDK in process;
`server.py` serves it over HTTP with uvicorn. Both paths run this same code.
"""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from batch_assets.batching.protocol import (
    CHAT_COMPLETIONS_URL,
    COMPLETION_WINDOW,
    EMBEDDINGS_URL,
    METADATA_KEY_MAX_LEN,
    METADATA_MAX_PAIRS,
    METADATA_VALUE_MAX_LEN,
    SUPPORTED_URLS,
)
from batch_assets.local.config import EngineConfig
from batch_assets.local.execute import chat_complete, embed_many, error_body
from batch_assets.local.models import LocalModels
from batch_assets.local.multipart_upload import UploadError, receive_upload
from batch_assets.local.store import StateStore, batch_row_to_api, new_id, now
from batch_assets.local.worker import ensure_worker

FILE_CHUNK_BYTES = 1 << 20


@dataclass
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: BinaryIO


@dataclass
class ApiResponse:
    status: int
    body: bytes | Iterator[bytes]
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type_, self.param, self.code = status, type_, param, code

    def response(self) -> ApiResponse:
        body = error_body(str(self), type_=self.type_, param=self.param, code=self.code)
        return ApiResponse(self.status, orjson.dumps(body))


def _json(obj: Any, status: int = 200) -> ApiResponse:
    return ApiResponse(status, orjson.dumps(obj))


def _not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{object_id}'.", code=None)


class LocalBatchAPI:
    def __init__(self, config: EngineConfig | None = None, *, token: str | None = None) -> None:
        self.config = config or EngineConfig.from_env()
        self.store = StateStore(self.config.state_dir)
        self.token = token
        self._calls = 0
        self._creates = 0
        self._calls_lock = threading.Lock()
        self._models: LocalModels | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., ApiResponse]]] = [
            ("POST", re.compile(r"/v1/files"), self.upload_file),
            ("GET", re.compile(r"/v1/files"), self.list_files),
            ("GET", re.compile(r"/v1/files/([^/]+)"), self.get_file),
            ("GET", re.compile(r"/v1/files/([^/]+)/content"), self.file_content),
            ("DELETE", re.compile(r"/v1/files/([^/]+)"), self.delete_file),
            ("POST", re.compile(r"/v1/batches"), self.create_batch),
            ("GET", re.compile(r"/v1/batches"), self.list_batches),
            ("GET", re.compile(r"/v1/batches/([^/]+)"), self.get_batch),
            ("POST", re.compile(r"/v1/batches/([^/]+)/cancel"), self.cancel_batch),
            ("POST", re.compile(EMBEDDINGS_URL), self.embeddings),
            ("POST", re.compile(CHAT_COMPLETIONS_URL), self.chat_completions),
        ]

    @property
    def models(self) -> LocalModels:
        if self._models is None:
            self._models = LocalModels(self.config.model_backend)
        return self._models

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            self._authorize(request)
            self._maybe_inject_api_error()
            path = request.path.rstrip("/")
            known_path = False
            for method, pattern, route in self._routes:
                match = pattern.fullmatch(path)
                if match:
                    known_path = True
                    if method == request.method:
                        return route(request, *match.groups())
            if known_path:
                raise ApiError(405, f"Method {request.method} is not allowed on {request.path}.")
            raise ApiError(404, f"Unknown route {request.method} {request.path}.", code="unknown_url")
        except ApiError as exc:
            return exc.response()

    def _authorize(self, request: ApiRequest) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise ApiError(401, "Incorrect API key provided for the local Batch API.", code="invalid_api_key")

    def _maybe_inject_api_error(self) -> None:
        faults = self.config.faults
        if not faults.api_error_first_n:
            return
        with self._calls_lock:
            self._calls += 1
            failing = self._calls <= faults.api_error_first_n
        if failing:
            status = faults.api_error_status
            kind = "rate_limit_error" if status == 429 else "server_error"
            raise ApiError(status, f"Injected API error {status} (local engine fault injection).", type_=kind)

    @staticmethod
    def _json_body(request: ApiRequest) -> dict[str, Any]:
        try:
            body = orjson.loads(request.body.read() or b"{}")
        except orjson.JSONDecodeError:
            raise ApiError(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    # -- files ----------------------------------------------------------------------------------
    def upload_file(self, request: ApiRequest) -> ApiResponse:
        file_id = new_id("file-")
        dest = self.store.file_path(file_id)
        try:
            upload = receive_upload(request.headers.get("content-type", ""), request.body, dest)
        except UploadError as exc:
            raise ApiError(400, str(exc)) from None
        purpose = upload.fields.get("purpose")
        if purpose != "batch":
            dest.unlink(missing_ok=True)
            raise ApiError(400, f"The local Batch API accepts purpose 'batch' only, got {purpose!r}.",
                           param="purpose")
        return _json(self.store.add_file(file_id, upload.filename or "upload.jsonl", purpose).to_api())

    def list_files(self, request: ApiRequest) -> ApiResponse:
        files = [f.to_api() for f in self.store.list_files(request.query.get("purpose"))]
        return _json({"object": "list", "data": files, "has_more": False})

    def _existing_file(self, file_id: str) -> Any:
        stored = self.store.get_file(file_id)
        if stored is None:
            raise _not_found("file", file_id)
        return stored

    def get_file(self, request: ApiRequest, file_id: str) -> ApiResponse:
        return _json(self._existing_file(file_id).to_api())

    def file_content(self, request: ApiRequest, file_id: str) -> ApiResponse:
        self._existing_file(file_id)
        path = self.store.file_path(file_id)

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while chunk := handle.read(FILE_CHUNK_BYTES):
                    yield chunk

        return ApiResponse(200, chunks(), {"content-type": "application/octet-stream",
                                           "content-length": str(path.stat().st_size)})

    def delete_file(self, request: ApiRequest, file_id: str) -> ApiResponse:
        if not self.store.delete_file(file_id):
            raise _not_found("file", file_id)
        return _json({"id": file_id, "object": "file", "deleted": True})

    # -- batches ------------------------------------------------------------------------------
    def create_batch(self, request: ApiRequest) -> ApiResponse:
        body = self._json_body(request)
        endpoint, window = body.get("endpoint"), body.get("completion_window")
        if endpoint not in SUPPORTED_URLS:
            raise ApiError(400, f"The local Batch API supports endpoints {list(SUPPORTED_URLS)}, got {endpoint!r}.",
                           param="endpoint")
        if window != COMPLETION_WINDOW:
            raise ApiError(400, f"completion_window must be '{COMPLETION_WINDOW}'.", param="completion_window")
        input_file_id = body.get("input_file_id")
        stored = self.store.get_file(str(input_file_id))
        if stored is None:
            raise ApiError(400, f"No file found with id '{input_file_id}'.", param="input_file_id")
        if stored.purpose != "batch":
            raise ApiError(400, "The input file must have purpose 'batch'.", param="input_file_id")
        metadata = body.get("metadata")
        _check_metadata(metadata)
        row = self.store.add_batch(
            endpoint=endpoint, input_file_id=stored.id, completion_window=window,
            window_seconds=self.config.completion_window_seconds, metadata=metadata,
            settings=self.config.batch_settings(),
        )
        self._ensure_worker()
        with self._calls_lock:
            self._creates += 1
            lose = self._creates <= self.config.faults.lost_create_responses
        if lose:  # the batch exists, but its creator never hears of it: the client must not create it again
            raise ApiError(502, "Injected 502 after the batch was created (local engine fault injection).",
                           type_="server_error")
        return _json(batch_row_to_api(row))

    def _ensure_worker(self) -> None:
        ensure_worker(Path(self.config.state_dir), self.config.worker_idle_seconds)

    def _existing_batch(self, batch_id: str) -> dict[str, Any]:
        row = self.store.get_batch_row(batch_id)
        if row is None:
            raise _not_found("batch", batch_id)
        return row

    def get_batch(self, request: ApiRequest, batch_id: str) -> ApiResponse:
        row = self._existing_batch(batch_id)
        if row["status"] in ("validating", "in_progress", "finalizing", "cancelling"):
            self._ensure_worker()  # resumes a batch whose worker crashed
        return _json(batch_row_to_api(row))

    def list_batches(self, request: ApiRequest) -> ApiResponse:
        try:
            limit = int(request.query.get("limit", 20))
        except ValueError:
            raise ApiError(400, "limit must be an integer.", param="limit") from None
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit must be between 1 and 100.", param="limit")
        rows, has_more = self.store.list_batch_rows(after=request.query.get("after"), limit=limit)
        if self.store.has_active_batches():
            self._ensure_worker()
        data = [batch_row_to_api(row) for row in rows]
        return _json({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                      "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    def cancel_batch(self, request: ApiRequest, batch_id: str) -> ApiResponse:
        row = self._existing_batch(batch_id)
        if row["status"] not in ("validating", "in_progress", "cancelling"):
            raise ApiError(409, f"Cannot cancel a batch with status '{row['status']}'.")
        self.store.update_batch(batch_id, only_if_status=("validating", "in_progress"), status="cancelling",
                                cancelling_at=now())
        self._ensure_worker()
        return _json(batch_row_to_api(self._existing_batch(batch_id)))

    # -- synchronous endpoints ---------------------------------------------------------------------
    def embeddings(self, request: ApiRequest) -> ApiResponse:
        status, body = embed_many(self.models, [self._json_body(request)])[0]
        return _json(body, status)

    def chat_completions(self, request: ApiRequest) -> ApiResponse:
        body = self._json_body(request)
        if body.get("stream"):
            raise ApiError(400, "The local engine does not stream; omit 'stream'.", param="stream")
        status, answer = chat_complete(self.models, body)
        return _json(answer, status)


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise ApiError(400, "metadata must be an object of string keys and values.", param="metadata")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise ApiError(400, f"metadata holds at most {METADATA_MAX_PAIRS} pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX_LEN or not isinstance(value, str) or len(value) > METADATA_VALUE_MAX_LEN:
            raise ApiError(400, f"metadata keys are at most {METADATA_KEY_MAX_LEN} characters and values "
                           f"strings of at most {METADATA_VALUE_MAX_LEN}; '{key}' is not.", param="metadata")

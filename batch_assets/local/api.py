"""The local Batch API: OpenAI's Files + Batches routes (and the synchronous endpoints) over a state folder.

Framework-free on purpose: `LocalBatchAPI.handle` takes a method, path, headers and a lazily read
body and returns status, headers and a body. `transport.py` hands it to the openai SDK in process;
`server.py` serves it over HTTP with uvicorn. Both paths run this same code, and both check the
bearer token before a byte of the body is read.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batch_assets.batching.protocol import (
    ACTIVE_BATCH_STATUSES,
    CHAT_COMPLETIONS_URL,
    COMPLETION_WINDOW,
    COMPLETIONS_URL,
    EMBEDDINGS_URL,
    METADATA_KEY_MAX_LEN,
    METADATA_MAX_PAIRS,
    METADATA_VALUE_MAX_LEN,
    RESPONSES_URL,
    SUPPORTED_URLS,
    BatchStatus,
)
from batch_assets.local.config import EngineConfig
from batch_assets.local.endpoints import chat_completion_chunks, stream_options
from batch_assets.local.errors import (
    ApiError,
    InvalidRequest,
    bounded_int,
    invalid_id,
    invalid_type,
    invalid_value,
    missing_parameter,
    query_int,
    unsupported_parameter,
)
from batch_assets.local.execute import answer_one, embed_many
from batch_assets.local.files_api import EXPIRES_AFTER_SECONDS, FilesRoutes
from batch_assets.local.models import LocalModels
from batch_assets.local.store import StateStore, batch_row_to_api, now
from batch_assets.local.validation import file_input_tokens
from batch_assets.local.wire import SSE_HEADERS, ApiRequest, ApiResponse, ChunkReader, json_response
from batch_assets.local.worker import ensure_worker

__all__ = ["ApiError", "ApiRequest", "ApiResponse", "ChunkReader", "LocalBatchAPI"]

log = logging.getLogger("batch_assets.local.api")

# Endpoints OpenAI's Batch API takes that the local engine has no model for.
_OPENAI_ONLY_ENDPOINTS = ("/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos")
_BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
             "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")


def _error_response(exc: ApiError) -> ApiResponse:
    return json_response(exc.body(), exc.status)


def _masked(key: str) -> str:
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}" if len(key) > 10 else "*" * len(key)


class LocalBatchAPI:
    def __init__(self, config: EngineConfig | None = None, *, token: str | None = None) -> None:
        self.config = config or EngineConfig.from_env()
        self.store = StateStore(self.config.state_dir)
        self.files = FilesRoutes(self.store)
        self.token = token
        self._calls = 0
        self._creates = 0
        self._calls_lock = threading.Lock()
        self._models: LocalModels | None = None
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., ApiResponse]]] = [
            ("POST", re.compile(r"/v1/files"), self.files.upload),
            ("GET", re.compile(r"/v1/files"), self.files.list),
            ("GET", re.compile(r"/v1/files/([^/]+)"), self.files.get),
            ("GET", re.compile(r"/v1/files/([^/]+)/content"), self.files.content),
            ("DELETE", re.compile(r"/v1/files/([^/]+)"), self.files.delete),
            ("POST", re.compile(r"/v1/batches"), self.create_batch),
            ("GET", re.compile(r"/v1/batches"), self.list_batches),
            ("GET", re.compile(r"/v1/batches/([^/]+)"), self.get_batch),
            ("POST", re.compile(r"/v1/batches/([^/]+)/cancel"), self.cancel_batch),
            ("POST", re.compile(EMBEDDINGS_URL), self.embeddings),
            ("POST", re.compile(CHAT_COMPLETIONS_URL), self.chat_completions),
            ("POST", re.compile(RESPONSES_URL), self.responses),
            ("POST", re.compile(COMPLETIONS_URL), self.completions),
        ]

    def close(self) -> None:
        self.store.close()
        if self._models is not None:
            self._models.close()

    @property
    def models(self) -> LocalModels:
        if self._models is None:
            self._models = LocalModels(self.config.model_backend)
        return self._models

    # -- dispatch --------------------------------------------------------------------------------
    def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            self._authorize(request)  # before the body is read: an unauthenticated upload is never spooled
            self._maybe_inject_api_error()
            path = request.path.rstrip("/")
            known_path = False
            for method, pattern, route in self._routes:
                match = pattern.fullmatch(path)
                if match:
                    known_path = True
                    if method == request.method:
                        return route(request, *match.groups())
            where = f"({request.method} {request.path})"
            if known_path:
                raise ApiError(405, f"Invalid method for URL {where}")
            raise ApiError(404, f"Invalid URL {where}")
        except ApiError as exc:
            return _error_response(exc)
        except Exception as exc:  # a bug or a broken state folder: still an OpenAI-shaped answer, never a bare 500
            log.exception("%s %s failed", request.method, request.path)
            return _error_response(ApiError(500, f"The local Batch API failed on {request.method} {request.path}: "
                                            f"{type(exc).__name__}: {exc}. The traceback is in the server's log; "
                                            "retrying may help if the state folder's disk was full or busy.",
                                            type_="server_error"))

    def _authorize(self, request: ApiRequest) -> None:
        if self.token is None:
            return
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or not given[7:].strip():
            raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                           "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). The local "
                           "Batch API takes the token given to `batch-assets local-api serve --token`.")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            raise ApiError(401, f"Incorrect API key provided: {_masked(given[7:].strip())}. The local Batch API "
                           "takes the token given to `batch-assets local-api serve --token`.", code="invalid_api_key")

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
            raise InvalidRequest(_BAD_JSON) from None
        if not isinstance(body, dict):
            raise InvalidRequest(_BAD_JSON)
        return body

    # -- batches ------------------------------------------------------------------------------
    def create_batch(self, request: ApiRequest) -> ApiResponse:
        body = self._json_body(request)
        for required in ("input_file_id", "endpoint", "completion_window"):
            if body.get(required) is None:
                raise missing_parameter(required)
        endpoint, window, input_file_id = body["endpoint"], body["completion_window"], body["input_file_id"]
        if endpoint not in SUPPORTED_URLS:
            hint = (f" The local engine has no model for {endpoint}; send that batch to OpenAI."
                    if endpoint in _OPENAI_ONLY_ENDPOINTS else "")
            raise invalid_value("endpoint", endpoint, SUPPORTED_URLS, hint)
        if window != COMPLETION_WINDOW:
            raise invalid_value("completion_window", window, (COMPLETION_WINDOW,))
        if not isinstance(input_file_id, str) or not input_file_id.startswith("file"):
            raise invalid_id("input_file_id", input_file_id, "file")
        metadata = body.get("metadata")
        _check_metadata(metadata)
        output_expires_after = _output_expires_after(body)
        stored = self.store.get_file(input_file_id)
        if stored is None:
            raise InvalidRequest(f"No such File object: {input_file_id}", "input_file_id")
        if stored.purpose != "batch":
            raise InvalidRequest(f"The input file {input_file_id} has purpose '{stored.purpose}'; a batch reads "
                                 "files uploaded with purpose 'batch'.", "input_file_id", "invalid_value")
        limit = self.config.faults.enqueued_token_limit
        enqueued = None
        if limit is not None:
            model, tokens = file_input_tokens(self.store.file_path(stored.id), endpoint)
            enqueued = (model, tokens, limit) if model else None
        row = self.store.add_batch(
            endpoint=endpoint, input_file_id=stored.id, completion_window=window,
            window_seconds=self.config.completion_window_seconds, metadata=metadata,
            settings=self.config.batch_settings(), output_expires_after=output_expires_after, enqueued=enqueued,
        )
        self._ensure_worker()
        with self._calls_lock:
            self._creates += 1
            lose = self._creates <= self.config.faults.lost_create_responses
        if lose:  # the batch exists, but its creator never hears of it: the client must not create it again
            raise ApiError(502, "Injected 502 after the batch was created (local engine fault injection).",
                           type_="server_error")
        return json_response(batch_row_to_api(row))

    def _ensure_worker(self) -> None:
        ensure_worker(Path(self.config.state_dir), self.config.worker_idle_seconds)

    def _existing_batch(self, batch_id: str) -> dict[str, Any]:
        if not batch_id.startswith("batch"):
            raise invalid_id("batch_id", batch_id, "batch")
        row = self.store.get_batch_row(batch_id)
        if row is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.")
        return row

    def get_batch(self, request: ApiRequest, batch_id: str) -> ApiResponse:
        row = self._existing_batch(batch_id)
        if row["status"] in ACTIVE_BATCH_STATUSES:
            self._ensure_worker()  # resumes a batch whose worker crashed
        return json_response(batch_row_to_api(row))

    def list_batches(self, request: ApiRequest) -> ApiResponse:
        limit = query_int(dict(request.query), "limit", 1, 100)
        rows, has_more = self.store.list_batch_rows(after=request.query.get("after"),
                                                    limit=20 if limit is None else limit)
        if self.store.has_active_batches():
            self._ensure_worker()
        data = [batch_row_to_api(row) for row in rows]
        return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                              "last_id": data[-1]["id"] if data else None, "has_more": has_more})

    def cancel_batch(self, request: ApiRequest, batch_id: str) -> ApiResponse:
        row = self._existing_batch(batch_id)
        if row["status"] not in (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING):
            raise ApiError(409, f"Cannot cancel a batch with status '{row['status']}'.")
        self.store.update_batch(batch_id, only_if_status=(BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS),
                                status=BatchStatus.CANCELLING,
                                cancelling_at=now())
        self._ensure_worker()
        return json_response(batch_row_to_api(self._existing_batch(batch_id)))

    # -- synchronous endpoints ---------------------------------------------------------------------
    def embeddings(self, request: ApiRequest) -> ApiResponse:
        status, body = embed_many(self.models, [self._json_body(request)])[0]
        return json_response(body, status)

    def chat_completions(self, request: ApiRequest) -> ApiResponse:
        body = self._json_body(request)
        stream, include_usage = stream_options(body)
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        status, answer = answer_one(self.models, CHAT_COMPLETIONS_URL, body)
        if status != 200 or not stream:  # errors come as JSON before any stream starts, as on OpenAI
            return json_response(answer, status)
        return ApiResponse(200, chat_completion_chunks(answer, include_usage=include_usage), dict(SSE_HEADERS))

    def _unstreamed(self, request: ApiRequest, endpoint: str) -> ApiResponse:
        body = self._json_body(request)
        if body.get("stream"):
            raise unsupported_parameter("stream", f"it streams {CHAT_COMPLETIONS_URL} only; omit 'stream' "
                                        f"for {endpoint}.")
        status, answer = answer_one(self.models, endpoint, {k: v for k, v in body.items() if k != "stream"})
        return json_response(answer, status)

    def responses(self, request: ApiRequest) -> ApiResponse:
        return self._unstreamed(request, RESPONSES_URL)

    def completions(self, request: ApiRequest) -> ApiResponse:
        return self._unstreamed(request, COMPLETIONS_URL)


def _output_expires_after(body: dict[str, Any]) -> int | None:
    spec = body.get("output_expires_after")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise invalid_type("output_expires_after", "an object", spec)
    if spec.get("anchor") != "created_at":
        if "anchor" not in spec:
            raise missing_parameter("output_expires_after.anchor")
        raise invalid_value("output_expires_after.anchor", spec["anchor"], ("created_at",))
    if "seconds" not in spec:
        raise missing_parameter("output_expires_after.seconds")
    low, high = EXPIRES_AFTER_SECONDS
    return bounded_int(spec, "seconds", low, high, where="output_expires_after.")


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise invalid_type("metadata", "an object", metadata)
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(f"Invalid 'metadata': too many properties. Expected an object with at most "
                             f"{METADATA_MAX_PAIRS} properties, but got an object with {len(metadata)} properties "
                             "instead.", "metadata", "object_above_max_properties")
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX_LEN or not isinstance(value, str) or len(value) > METADATA_VALUE_MAX_LEN:
            raise InvalidRequest(f"metadata keys are at most {METADATA_KEY_MAX_LEN} characters and values strings "
                                 f"of at most {METADATA_VALUE_MAX_LEN}; '{key}' is not.", f"metadata.{key}",
                                 "invalid_value")


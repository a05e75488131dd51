"""The batch worker: a detached process that validates, executes and finalizes batches.

One worker per state folder at a time (an exclusive file lock), so a batch is never executed twice.
Each finished item is committed before the next starts, so a crashed worker's successor resumes
where it stopped. The worker exits after a quiet spell; any API call that finds unfinished batches
and no worker starts a new one.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batch_assets.batching.protocol import (
    BATCH_CANCELLED_CODE,
    BATCH_EXPIRED_CODE,
    EMBEDDINGS_URL,
    MAX_EMBEDDING_INPUTS_PER_BATCH,
    MAX_FILE_BYTES,
    MAX_REQUESTS_PER_FILE,
    TERMINAL_BATCH_STATUSES,
)
from batch_assets.batching.tokens import count_request_tokens
from batch_assets.local.config import FaultConfig, model_backend
from batch_assets.local.execute import Answer, answer_one, answer_usage, embed_many, error_body
from batch_assets.local.models import LocalModels
from batch_assets.local.store import StateStore, new_id, now

log = logging.getLogger("batch_assets.local.worker")

EMBEDDING_LINES_PER_CHUNK = 32
MAX_REPORTED_ERRORS = 100
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


# -- validation --------------------------------------------------------------------------------------
def _iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line_no, raw


def validate_input(path: Path, endpoint: str) -> tuple[list[dict[str, Any]], int, str | None, str]:
    """Checks every line as OpenAI does. Returns (errors, request count, model, sha256 of the file)."""
    errors: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    models: set[str] = set()
    count = embedding_inputs = 0

    def err(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": line})

    if path.stat().st_size > MAX_FILE_BYTES:
        err("file_too_large", f"The input file is larger than the {MAX_FILE_BYTES} bytes a batch accepts.")
    for line_no, raw in _iter_lines(path):
        count += 1
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            err("invalid_json_line", "This line is not parseable as valid JSON.", line_no)
            continue
        if not isinstance(line, dict):
            err("invalid_json_line", "Each line must be a JSON object.", line_no)
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            err("missing_required_parameter", "Missing required parameter: 'custom_id'.", line_no, "custom_id")
        elif custom_id in seen_ids:
            err("duplicate_custom_id", f"The custom_id '{custom_id}' appears more than once.", line_no, "custom_id")
        else:
            seen_ids.add(custom_id)
        if line.get("method") != "POST":
            err("invalid_value", "The method must be 'POST'.", line_no, "method")
        if line.get("url") != endpoint:
            err("invalid_url", f"The url '{line.get('url')}' does not match the batch endpoint '{endpoint}'.",
                line_no, "url")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            err("missing_required_parameter", "Missing required parameter: 'body.model'.", line_no, "body.model")
            continue
        models.add(body["model"])
        if len(models) > 1:
            err("mismatched_model", "All requests in a batch must use the same model; found "
                f"{sorted(models)}.", line_no, "body.model")
            models = {sorted(models)[0]}
        if endpoint == EMBEDDINGS_URL:
            raw_input = body.get("input")
            embedding_inputs += len(raw_input) if isinstance(raw_input, list) else 1
    if count == 0:
        err("empty_file", "The input file has no requests.")
    if count > MAX_REQUESTS_PER_FILE:
        err("too_many_requests", f"A batch holds at most {MAX_REQUESTS_PER_FILE} requests; this file has {count}.")
    if embedding_inputs > MAX_EMBEDDING_INPUTS_PER_BATCH:
        err("too_many_embedding_inputs", f"An embeddings batch holds at most {MAX_EMBEDDING_INPUTS_PER_BATCH} "
            f"inputs; this file has {embedding_inputs}.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return errors[:MAX_REPORTED_ERRORS], count, (next(iter(models)) if models else None), digest


def file_input_tokens(path: Path, endpoint: str) -> tuple[str | None, int]:
    """(model, input tokens) of a batch input file, counted the way OpenAI counts enqueued tokens."""
    bodies = []
    for _, raw in _iter_lines(path):
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("body"), dict) and line["body"].get("model"):
            bodies.append(line["body"])
    if not bodies:
        return None, 0
    try:
        return bodies[0]["model"], sum(count_request_tokens(endpoint, bodies))
    except ValueError:  # lines validation will refuse anyway
        return bodies[0]["model"], 0


# -- fault injection ------------------------------------------------------------------------------------
def injected_failure(faults: FaultConfig, file_digest: str, custom_id: str) -> Answer | None:
    """The same seed, input file and custom_id always give the same answer."""
    if not faults.item_failure_rate:
        return None
    digest = hashlib.sha256(f"{faults.seed}:{file_digest}:{custom_id}".encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 >= faults.item_failure_rate:
        return None
    status = faults.item_failure_status_codes[digest[8] % len(faults.item_failure_status_codes)]
    kinds = {400: "invalid_request_error", 429: "rate_limit_error"}
    return status, error_body(f"Injected failure (local engine fault injection, status {status}).",
                              type_=kinds.get(status, "server_error"), code="injected_failure")


# -- processing one batch --------------------------------------------------------------------------------
def _result_line(custom_id: str, answer: Answer) -> bytes:
    status, body = answer
    return orjson.dumps({
        "id": new_id("batch_req_"), "custom_id": custom_id,
        "response": {"status_code": status, "request_id": new_id("req_"), "body": body}, "error": None,
    })


def _usage(answer: Answer) -> tuple[int, int]:
    return answer_usage(answer)


class BatchRunner:
    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._models: dict[str, LocalModels] = {}

    def models(self, backend: str) -> LocalModels:
        if backend not in self._models:
            self._models[backend] = LocalModels(model_backend(backend))
        return self._models[backend]

    def run(self, batch_id: str) -> None:
        row = self.store.get_batch_row(batch_id)
        assert row is not None
        if row["status"] == "validating" and not self._validate(row):
            return
        row = self.store.get_batch_row(batch_id)
        assert row is not None
        if row["status"] == "in_progress":
            self._execute(row)
        self._finalize(batch_id)

    def _validate(self, row: dict[str, Any]) -> bool:
        path = self.store.file_path(row["input_file_id"])
        errors, count, model, digest = validate_input(path, row["endpoint"])
        # Errors decided when the batch was created (an enqueued-token limit) fail it here, as OpenAI does.
        errors = orjson.loads(row["settings"]).get("validation_errors") or errors
        if errors:
            self.store.update_batch(row["id"], only_if_status=("validating", "cancelling"), status="failed",
                                    failed_at=now(), errors={"object": "list", "data": errors}, total=count)
            return False
        # If a cancel arrived meanwhile this update does nothing and _finalize cancels the batch.
        self.store.update_batch(row["id"], only_if_status=("validating",), status="in_progress",
                                in_progress_at=now(), total=count, model=model, input_digest=digest)
        return True

    def _execute(self, row: dict[str, Any]) -> None:
        settings = orjson.loads(row["settings"])
        faults = FaultConfig.from_batch_settings(settings["faults"])
        models = self.models(settings["model_backend"])
        batch_id, endpoint = row["id"], row["endpoint"]
        done = self.store.done_line_numbers(batch_id)
        processed = len(done)
        # Slow processing (fault injection) goes item by item, so cancel and expiry land mid-batch.
        chunk_size = EMBEDDING_LINES_PER_CHUNK if endpoint == EMBEDDINGS_URL and not faults.item_delay_seconds else 1
        pending = [item for item in self._input_items(row) if item[0] not in done]
        for start in range(0, len(pending), chunk_size):
            current = self.store.get_batch_row(batch_id)
            if current is None or current["status"] != "in_progress":
                return  # cancelling: _finalize writes what is left
            if now() >= current["expires_at"] or (
                faults.expire_after_items is not None and processed >= faults.expire_after_items
            ):
                self._expire(batch_id)
                return
            chunk = pending[start:start + chunk_size]
            if faults.expire_after_items is not None:
                chunk = chunk[: faults.expire_after_items - processed]
            if faults.item_delay_seconds:
                time.sleep(faults.item_delay_seconds * len(chunk))
            answers = self._answer(models, endpoint, chunk, faults, current["input_digest"])
            results = [(line_no, status == 200, _result_line(cid, (status, body)))
                       for (line_no, cid, _), (status, body) in zip(chunk, answers, strict=True)]
            usage = [_usage(answer) for answer in answers if answer[0] == 200]
            self.store.record_items(batch_id, results, (sum(u[0] for u in usage), sum(u[1] for u in usage)))
            processed += len(chunk)
        if faults.expire_after_items is not None and processed >= faults.expire_after_items and \
                processed < len(pending) + len(done):
            self._expire(batch_id)

    def _expire(self, batch_id: str) -> None:
        self.store.update_batch(batch_id, only_if_status=("in_progress",), status="finalizing",
                                finalizing_at=now(), ending="expired")

    def _input_items(self, row: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
        items = []
        for line_no, raw in _iter_lines(self.store.file_path(row["input_file_id"])):
            try:  # tolerant: a batch cancelled before validation may hold invalid lines
                line = orjson.loads(raw)
                items.append((line_no, str(line["custom_id"]), line.get("body")))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return items

    @staticmethod
    def _answer(models: LocalModels, endpoint: str, chunk: list[tuple[int, str, dict[str, Any]]],
                faults: FaultConfig, digest: str) -> list[Answer]:
        answers: list[Answer | None] = [injected_failure(faults, digest, cid) for _, cid, _ in chunk]
        todo = [i for i, answer in enumerate(answers) if answer is None]
        if endpoint == EMBEDDINGS_URL:
            for i, answer in zip(todo, embed_many(models, [chunk[i][2] for i in todo]), strict=True):
                answers[i] = answer
        else:
            for i in todo:
                answers[i] = answer_one(models, endpoint, chunk[i][2])
        answered = [answer for answer in answers if answer is not None]
        assert len(answered) == len(answers)
        return answered

    def _finalize(self, batch_id: str) -> None:
        row = self.store.get_batch_row(batch_id)
        assert row is not None
        status = row["status"]
        if status in TERMINAL_BATCH_STATUSES:
            return
        if status == "validating":  # cancelled before it started
            status = "cancelling"
        final = {"in_progress": "completed", "finalizing": row["ending"] or "completed",
                 "cancelling": "cancelled"}[status]
        if status == "in_progress":
            self.store.update_batch(batch_id, status="finalizing", finalizing_at=now())
        unfinished: list[bytes] = []
        if final in ("expired", "cancelled"):
            code, message = ((BATCH_EXPIRED_CODE, _EXPIRED_MESSAGE) if final == "expired"
                             else (BATCH_CANCELLED_CODE, _CANCELLED_MESSAGE))
            done = self.store.done_line_numbers(batch_id)
            unfinished = [
                orjson.dumps({"id": new_id("batch_req_"), "custom_id": cid, "response": None,
                              "error": {"code": code, "message": message}})
                for line_no, cid, _ in self._input_items(row) if line_no not in done
            ]
        output_id = self._write_file(batch_id, "output", self.store.iter_item_results(batch_id, succeeded=True), [])
        error_id = self._write_file(batch_id, "error", self.store.iter_item_results(batch_id, succeeded=False),
                                    unfinished)
        stamp = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[final]
        fields: dict[str, Any] = {"status": final, stamp: now(), "output_file_id": output_id,
                                  "error_file_id": error_id, "failed": row["failed"] + len(unfinished)}
        if final == "cancelled" and row["total"] == 0:
            fields["total"] = len(unfinished)
        self.store.update_batch(batch_id, **fields)

    def _write_file(self, batch_id: str, kind: str, stored: Iterator[str], extra: list[bytes]) -> str | None:
        file_id = new_id("file-")
        path = self.store.file_path(file_id)
        lines = 0
        with path.open("wb") as handle:
            for line in stored:
                handle.write(line.encode() + b"\n")
                lines += 1
            for extra_line in extra:
                handle.write(extra_line + b"\n")
                lines += 1
        if lines == 0:
            path.unlink()
            return None
        self.store.add_file(file_id, f"{batch_id}_{kind}.jsonl", f"batch_{kind}")
        return file_id


# -- the worker process ------------------------------------------------------------------------------------
def _lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / "worker.lock"


def _try_lock(state_dir: Path) -> int | None:
    fd = os.open(_lock_path(state_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def worker_is_running(state_dir: Path) -> bool:
    fd = _try_lock(state_dir)
    if fd is None:
        return True
    os.close(fd)  # closing releases the lock
    return False


def ensure_worker(state_dir: Path, idle_seconds: float) -> None:
    """Starts a detached worker unless one holds the lock. Cheap: one flock attempt."""
    state_dir = Path(state_dir)
    if worker_is_running(state_dir):
        return
    log_file = (state_dir / "worker.log").open("ab")
    subprocess.Popen(
        [sys.executable, "-m", "batch_assets.local.worker", str(state_dir.resolve()), "--idle-seconds",
         str(idle_seconds)],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        close_fds=True,
    )
    log_file.close()


def serve_forever(state_dir: Path, idle_seconds: float) -> bool:
    """Runs batches until none arrive for idle_seconds. Returns False at once if another worker runs."""
    fd = _try_lock(state_dir)
    if fd is None:
        return False
    (Path(state_dir) / "worker.pid").write_text(str(os.getpid()))
    store = StateStore(state_dir)
    runner = BatchRunner(store)
    idle_since = time.monotonic()
    while True:
        batch_id = store.next_active_batch_id()
        if batch_id is not None:
            log.info("running %s", batch_id)
            runner.run(batch_id)
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since < idle_seconds:
            time.sleep(0.2)
            continue
        # Release, then look once more: a batch created while we held the lock would otherwise wait
        # for the next API call to start a worker.
        os.close(fd)
        if not store.has_active_batches():
            return True
        fd = _try_lock(state_dir)
        if fd is None:
            return True
        idle_since = time.monotonic()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Batch API worker (started automatically).")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{os.getpid()}] %(message)s")
    log.info("started")
    if serve_forever(args.state_dir, args.idle_seconds):
        log.info("idle, exiting")
    else:
        log.info("another worker holds the lock, exiting")


if __name__ == "__main__":
    main()

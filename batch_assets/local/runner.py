"""Runs every unfinished batch of a state folder side by side.

One loop (the worker's main thread) owns the state: it validates new batches as they arrive, hands
work to the model threads a chunk at a time, taking from each running batch in turn, commits each
chunk's answers as soon as they come back, and finalizes batches that are done, cancelled or
expired. A small batch created behind a large one therefore finishes long before it.

Chat lines go one per call to a pool of threads as wide as the chat engines' slots; embeddings go
in chunks of texts of similar token counts (the whole batch sorted by them, longest first) to one
embeddings thread per core.
A line that makes the model code raise becomes that line's error; a line that killed the worker
process twice is answered with an error instead of being started a third time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from batch_assets.batching.protocol import (
    BATCH_CANCELLED_CODE,
    BATCH_EXPIRED_CODE,
    EMBEDDINGS_URL,
    TERMINAL_BATCH_STATUSES,
)
from batch_assets.local.config import FaultConfig
from batch_assets.local.execute import (
    Answer,
    answer_one,
    answer_usage,
    embed_many,
    embedding_order,
    engine_failure,
    error_body,
)
from batch_assets.local.models import LocalModels
from batch_assets.local.store import StateStore, new_id, now
from batch_assets.local.validation import iter_lines, validate_input

log = logging.getLogger("batch_assets.local.worker")

# Measured on 2 cores (benchmarks/local_engine_throughput.py): small runs of token-sorted texts on
# one single-thread ONNX session per core beat one text per run on a two-thread session, and larger
# runs gained nothing.
EMBEDDING_LINES_PER_CHUNK = 8
CORES = max(1, min(os.cpu_count() or 1, 4))
# One single-thread llama.cpp engine per core (threads that share an engine wait for each other at
# every op), each running several calls at once in its slots.
CHAT_ENGINES = CORES
CHAT_SLOTS = 4
# A line whose start was counted this often without a result killed the worker each time.
MAX_STARTS_WITHOUT_RESULT = 2
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
_CRASHED_MESSAGE = ("The local engine's worker process died while running this request, {starts} times; it is not "
                    "run again. Check the request (and the worker.log in the state folder).")

Item = tuple[int, str, Any]  # line number, custom_id, request body
Kind = Literal["chat", "embeddings"]


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


def answer_chunk(models: LocalModels, endpoint: str, chunk: list[Item], faults: FaultConfig,
                 digest: str) -> list[Answer]:
    """The answers to a chunk of lines, in order. Never raises: a failure is an answer."""
    if faults.item_delay_seconds:
        time.sleep(faults.item_delay_seconds * len(chunk))
    answers: list[Answer | None] = [injected_failure(faults, digest, cid) for _, cid, _ in chunk]
    todo = [i for i, answer in enumerate(answers) if answer is None]
    try:
        if endpoint == EMBEDDINGS_URL:
            for i, answer in zip(todo, embed_many(models, [chunk[i][2] for i in todo]), strict=True):
                answers[i] = answer
        else:
            for i in todo:
                answers[i] = answer_one(models, endpoint, chunk[i][2])
    except Exception as exc:  # answer_one and embed_many answer failures themselves; this is the last net
        answers = [engine_failure(exc) if answer is None else answer for answer in answers]
    return [answer if answer is not None else engine_failure(RuntimeError("no answer")) for answer in answers]


def _result_line(custom_id: str, answer: Answer) -> bytes:
    status, body = answer
    return orjson.dumps({
        "id": new_id("batch_req_"), "custom_id": custom_id,
        "response": {"status_code": status, "request_id": new_id("req_"), "body": body}, "error": None,
    })


@dataclass
class _Running:
    """An in-progress batch as the loop sees it."""

    id: str
    endpoint: str
    kind: Kind
    backend: str
    faults: FaultConfig
    digest: str
    recorded: int  # lines with a committed result
    pending: deque[list[Item]] = field(default_factory=deque)
    in_flight: int = 0  # lines handed to a model thread and not yet committed
    stopped: bool = False  # cancelled or expired: nothing more is started

    def may_start(self) -> bool:
        if self.stopped or not self.pending:
            return False
        if self.faults.item_delay_seconds and self.in_flight:  # slow processing goes one line at a time
            return False
        limit = self.faults.expire_after_items
        return limit is None or self.recorded + self.in_flight < limit

    def take(self) -> list[Item]:
        """The next chunk, cut to what a forced expiry (fault injection) still lets run."""
        chunk = self.pending.popleft()
        limit = self.faults.expire_after_items
        if limit is not None and len(chunk) > limit - self.recorded - self.in_flight:
            allowed = limit - self.recorded - self.in_flight
            self.pending.appendleft(chunk[allowed:])
            chunk = chunk[:allowed]
        self.in_flight += len(chunk)
        return chunk


class BatchRunner:
    """Validates, executes and finalizes the state folder's batches, all of them at once."""

    def __init__(self, store: StateStore, *, chat_engines: int = CHAT_ENGINES, chat_slots: int = CHAT_SLOTS,
                 embedding_sessions: int = CORES, embedding_chunk: int = EMBEDDING_LINES_PER_CHUNK) -> None:
        self.store = store
        self._chat_engines, self._chat_slots = chat_engines, chat_slots
        self._embedding_sessions = embedding_sessions
        self._embedding_chunk = embedding_chunk
        self._models: dict[str, LocalModels] = {}
        self._running: dict[str, _Running] = {}
        self._seen: set[str] = set()
        # One chunk more than the embedding sessions, so the next is ready when one returns.
        self._capacity: dict[Kind, int] = {"chat": chat_engines * chat_slots, "embeddings": embedding_sessions + 1}
        self._busy: dict[Kind, int] = {"chat": 0, "embeddings": 0}
        self._pools: dict[Kind, ThreadPoolExecutor] = {
            "chat": ThreadPoolExecutor(self._capacity["chat"], thread_name_prefix="chat"),
            "embeddings": ThreadPoolExecutor(embedding_sessions, thread_name_prefix="embeddings"),
        }
        self._answers: queue.Queue[tuple[str, list[Item], list[Answer]]] = queue.Queue()
        self._turn = 0

    def models(self, backend: str) -> LocalModels:
        if backend not in self._models:
            self._models[backend] = LocalModels(
                "fake" if backend == "fake" else "real", chat_threads=1, chat_engines=self._chat_engines,
                chat_slots=self._chat_slots, embed_threads=1, embed_sessions=self._embedding_sessions)
        return self._models[backend]

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        for models in self._models.values():
            models.close()

    def busy(self) -> bool:
        return any(self._busy.values())

    # -- the loop ----------------------------------------------------------------------------------
    def step(self, wait: float = 0.2) -> bool:
        """One turn: moves every active batch along, starts work, commits what finished (waiting up to
        ``wait`` seconds for it). Returns whether any batch is still active."""
        rows = self.store.active_batch_rows()
        for row in rows:
            try:
                self._advance(row)
            except Exception as exc:  # a bad batch must not stop the others, nor crash every new worker
                self._failed_to_advance(row, exc)
        self._start_work()
        if self.busy():
            self._commit_answers(wait)
        elif rows:
            time.sleep(min(wait, 0.05))
        return bool(rows) or self.busy()

    def run_until_idle(self, timeout: float = 600.0) -> None:
        """Runs until no batch is active (for tests and scripts)."""
        deadline = time.monotonic() + timeout
        while self.step():
            if time.monotonic() > deadline:
                raise TimeoutError(f"batches still active after {timeout}s")

    def _advance(self, row: dict[str, Any]) -> None:
        batch_id, status = row["id"], row["status"]
        if batch_id not in self._seen:
            self._seen.add(batch_id)
            log.info("running %s", batch_id)
        if status == "validating":
            self._validate(row)
            return
        run = self._running.get(batch_id)
        if status != "in_progress":  # cancelling, or finalizing (expired here, or left so by a crashed worker)
            if run is not None:
                run.stopped = True
            if run is None or not run.in_flight:
                self._finalize(batch_id)
            return
        if run is None:
            run = self._running[batch_id] = self._load(row)
        limit = run.faults.expire_after_items
        unfinished = bool(run.pending or run.in_flight)
        if (now() >= row["expires_at"] and unfinished) or (limit is not None and run.recorded >= limit and run.pending):
            run.stopped = True
            self.store.update_batch(batch_id, only_if_status=("in_progress",), status="finalizing",
                                    finalizing_at=now(), ending="expired")
        elif not run.pending and not run.in_flight:
            self._finalize(batch_id)

    def _failed_to_advance(self, row: dict[str, Any], exc: Exception) -> None:
        log.exception("%s: %s", row["id"], exc)
        if row["id"] in self._running or row["status"] not in ("validating", "in_progress"):
            return  # it ran: the next turn tries to finalize it again (a full disk may have room by then)
        message = (f"The local engine could not start this batch ({type(exc).__name__}: {exc}). Check the input "
                   "file, then create the batch again.")
        self.store.update_batch(row["id"], only_if_status=("validating", "in_progress", "cancelling", "finalizing"),
                                status="failed", failed_at=now(),
                                errors={"object": "list", "data": [{"code": "internal_error", "message": message,
                                                                    "param": None, "line": None}]})

    def _start_work(self) -> None:
        """Hands out chunks, one per running batch in turn, while the model threads have room."""
        runs = list(self._running.values())
        if not runs:
            return
        self._turn = (self._turn + 1) % len(runs)
        runs = runs[self._turn:] + runs[:self._turn]
        started: list[tuple[_Running, list[Item]]] = []
        progress = True
        while progress:
            progress = False
            for run in runs:
                if run.may_start() and self._busy[run.kind] < self._capacity[run.kind]:
                    chunk = run.take()
                    self._busy[run.kind] += 1
                    started.append((run, chunk))
                    progress = True
        if not started:
            return
        self.store.mark_started([(run.id, line_no) for run, chunk in started for line_no, _, _ in chunk])
        for run, chunk in started:
            self._pools[run.kind].submit(self._work, run, chunk)

    def _work(self, run: _Running, chunk: list[Item]) -> None:
        try:
            answers = answer_chunk(self.models(run.backend), run.endpoint, chunk, run.faults, run.digest)
        except BaseException as exc:  # even a failure to load the models must reach the loop
            answers = [engine_failure(exc)] * len(chunk)
        self._answers.put((run.id, chunk, answers))

    def _commit_answers(self, wait: float) -> None:
        try:
            finished = [self._answers.get(timeout=wait)]
        except queue.Empty:
            return
        while True:
            try:
                finished.append(self._answers.get_nowait())
            except queue.Empty:
                break
        for batch_id, chunk, answers in finished:
            run = self._running[batch_id]
            self._record(batch_id, chunk, answers)
            run.in_flight -= len(chunk)
            run.recorded += len(chunk)
            self._busy[run.kind] -= 1

    def _record(self, batch_id: str, chunk: list[Item], answers: list[Answer]) -> None:
        results = [(line_no, answer[0] == 200, _result_line(cid, answer))
                   for (line_no, cid, _), answer in zip(chunk, answers, strict=True)]
        usage = [answer_usage(answer) for answer in answers if answer[0] == 200]
        self.store.record_items(batch_id, results, (sum(u[0] for u in usage), sum(u[1] for u in usage)))

    # -- one batch -----------------------------------------------------------------------------------
    def _validate(self, row: dict[str, Any]) -> None:
        settings = orjson.loads(row["settings"])
        if row["endpoint"] == EMBEDDINGS_URL:  # the embedder loads on another core meanwhile (~0.2 s)
            models = self.models(settings["model_backend"])
            self._pools["embeddings"].submit(lambda: models.embedder)  # a failure shows when the lines run
        path = self.store.file_path(row["input_file_id"])
        errors, count, model, digest = validate_input(path, row["endpoint"])
        # Errors decided when the batch was created (an enqueued-token limit) fail it here, as OpenAI does.
        errors = settings.get("validation_errors") or errors
        if errors:
            self.store.update_batch(row["id"], only_if_status=("validating", "cancelling"), status="failed",
                                    failed_at=now(), errors={"object": "list", "data": errors}, total=count)
            return
        # If a cancel arrived meanwhile this update does nothing and the next turn cancels the batch.
        self.store.update_batch(row["id"], only_if_status=("validating",), status="in_progress",
                                in_progress_at=now(), total=count, model=model, input_digest=digest)

    def _load(self, row: dict[str, Any]) -> _Running:
        settings = orjson.loads(row["settings"])
        faults = FaultConfig.from_batch_settings(settings["faults"])
        endpoint = row["endpoint"]
        batch_id = row["id"]
        done = self.store.done_line_numbers(batch_id)
        starts = self.store.item_starts(batch_id)
        items = [item for item in self._input_items(row) if item[0] not in done]
        crashed = [item for item in items if starts.get(item[0], 0) >= MAX_STARTS_WITHOUT_RESULT]
        if crashed:
            log.warning("%s: %d line(s) killed the worker before; answering them with an error", batch_id,
                        len(crashed))
            self._record(batch_id, crashed, [
                (500, error_body(_CRASHED_MESSAGE.format(starts=starts[item[0]]), type_="server_error",
                                 code="engine_error")) for item in crashed])
        run = _Running(id=batch_id, endpoint=endpoint, kind="embeddings" if endpoint == EMBEDDINGS_URL else "chat",
                       backend=settings["model_backend"], faults=faults, digest=row["input_digest"] or "",
                       recorded=len(done) + len(crashed))
        # A line that was started before without a result runs alone: if it kills the worker again, it is
        # the only one charged with it.
        suspects = [[item] for item in items if 0 < starts.get(item[0], 0) < MAX_STARTS_WITHOUT_RESULT]
        rest = [item for item in items if item[0] not in starts]
        run.pending.extend(suspects)
        if run.kind == "embeddings" and not faults.item_delay_seconds:
            rest = [rest[i] for i in embedding_order(self.models(run.backend), [item[2] for item in rest])]
            size = self._embedding_chunk
        else:
            size = 1  # chat: one call per line; slow processing: cancel and expiry land between lines
        run.pending.extend(rest[i:i + size] for i in range(0, len(rest), size))
        return run

    def _input_items(self, row: dict[str, Any]) -> list[Item]:
        items = []
        for line_no, raw in iter_lines(self.store.file_path(row["input_file_id"])):
            try:  # tolerant: a batch cancelled before validation may hold invalid lines
                line = orjson.loads(raw)
                items.append((line_no, str(line["custom_id"]), line.get("body")))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return items

    def _finalize(self, batch_id: str) -> None:
        row = self.store.get_batch_row(batch_id)
        if row is None or row["status"] in TERMINAL_BATCH_STATUSES:
            self._running.pop(batch_id, None)
            return
        status = row["status"]
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
        self._running.pop(batch_id, None)
        log.info("%s %s", batch_id, final)

    def _write_file(self, batch_id: str, kind: str, stored: Iterator[str], extra: list[bytes]) -> str | None:
        file_id = new_id("file-")
        path: Path = self.store.file_path(file_id)
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

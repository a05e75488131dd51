"""Durable state of the local Batch API: SQLite for objects, plain files for file contents.

Every process (the API in a Dagster run, the HTTP server, the detached worker) opens the same state
folder; SQLite in WAL mode makes their short transactions safe across processes.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batch_assets.batching.protocol import ACTIVE_BATCH_STATUSES, BatchStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER,
    expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER,
    output_file_id TEXT, error_file_id TEXT,
    errors TEXT,
    metadata TEXT,
    model TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL,
    input_digest TEXT,
    ending TEXT,
    output_expires_after INTEGER
);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS items (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (batch_id, line_no)
);
-- How often a worker started an item that has no result yet: an item that kills the worker
-- process (a crash inside the model) is answered with an error instead of being tried forever.
CREATE TABLE IF NOT EXISTS item_starts (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    starts INTEGER NOT NULL,
    PRIMARY KEY (batch_id, line_no)
);
"""

# Columns added after the first release: a state folder made before them gets them on open.
_ADDED_COLUMNS = {"files": {"expires_at": "INTEGER"},
                  "batches": {"output_expires_after": "INTEGER", "enqueued_model": "TEXT",
                              "enqueued_tokens": "INTEGER"}}

_ACTIVE_STATUSES = tuple(sorted(ACTIVE_BATCH_STATUSES))  # as SQL parameters
# A batch's input tokens count against its model's enqueued-token limit until it finalizes or is cancelled.
_ENQUEUED_STATUSES = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING)
# OpenAI: "files with purpose=batch expire after 30 days"; a batch's output and error files too,
# unless the batch was created with `output_expires_after`.
DEFAULT_FILE_EXPIRY_SECONDS = {"batch": 30 * 24 * 3600, "batch_output": 30 * 24 * 3600}
_FILE_COLUMNS = "id, bytes, created_at, filename, purpose, expires_at"
_BATCH_TIMESTAMP_FIELDS = (
    "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at",
)


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class StoredFile:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
            "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
            "status": "processed", "status_details": None,
        }


def _use_wal(con: sqlite3.Connection, wait_seconds: float = 60.0) -> None:
    """Switches the state database to WAL (a setting kept in the file). Switching needs the database to itself,
    and SQLite answers "database is locked" at once, without waiting, when another process opens it in the same
    instant (two clients starting together): wait and try again."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class StateStore:
    """One state folder: `state.sqlite3` plus `files/<file id>`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's connection, so close() reaches them all
        self._opened_lock = threading.Lock()
        self._connection().executescript(_SCHEMA)  # idempotent; executescript manages its own commit
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        con = self._connection()
        for table, columns in _ADDED_COLUMNS.items():
            present = {row["name"] for row in con.execute(f"PRAGMA table_info({table})")}
            for name, sql_type in columns.items():
                if name not in present:
                    try:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
                    except sqlite3.OperationalError:  # another process added it first
                        pass

    # -- connections ---------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            # One connection per thread; check_same_thread is off only so that close() may close them all.
            con = sqlite3.connect(self.state_dir / "state.sqlite3", timeout=60, isolation_level=None,
                                  check_same_thread=False)
            con.row_factory = sqlite3.Row
            _use_wal(con)
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
            with self._opened_lock:
                self._opened.append(con)
        return con

    def close(self) -> None:
        """Closes every connection this store opened (it reopens on next use)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for con in opened:
            con.close()
        self._local = threading.local()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, params).fetchall()

    # -- files ---------------------------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def add_file(self, file_id: str, filename: str, purpose: str, expires_after: int | None = None) -> StoredFile:
        """Registers a file whose content is already at file_path(file_id).

        It expires ``expires_after`` seconds after now, by default OpenAI's: 30 days for batch
        inputs and outputs, never for the rest.
        """
        if purpose == "batch_error":  # OpenAI labels a batch's output and error files alike
            purpose = "batch_output"
        created = now()
        if expires_after is None:
            expires_after = DEFAULT_FILE_EXPIRY_SECONDS.get(purpose)
        expires_at = None if expires_after is None else created + expires_after
        stored = StoredFile(file_id, self.file_path(file_id).stat().st_size, created, filename, purpose, expires_at)
        with self.transaction() as con:
            con.execute(
                "INSERT INTO files (id, bytes, created_at, filename, purpose, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (stored.id, stored.bytes, stored.created_at, stored.filename, stored.purpose, stored.expires_at),
            )
        return stored

    _LIVE = "deleted = 0 AND (expires_at IS NULL OR expires_at > ?)"

    def get_file(self, file_id: str) -> StoredFile | None:
        """The file, unless it was deleted or has expired."""
        rows = self.read(f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND {self._LIVE}", (file_id, now()))
        return StoredFile(*rows[0]) if rows else None

    def list_files(self, purpose: str | None = None, *, after: str | None = None, limit: int = 10_000,
                   order: str = "desc") -> tuple[list[StoredFile], bool]:
        """A page of live files in upload order (``desc``: newest first) after the file ``after``,
        and whether more follow. Rows are never removed (deletion is a flag), so rowid is upload order."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        sql = f"SELECT {_FILE_COLUMNS} FROM files WHERE {self._LIVE}"
        params: list[Any] = [now()]
        if purpose:
            sql += " AND purpose = ?"
            params.append(purpose)
        if after:
            sql += f" AND rowid {'<' if order == 'desc' else '>'} (SELECT rowid FROM files WHERE id = ?)"
            params.append(after)
        sql += f" ORDER BY rowid {order.upper()} LIMIT ?"
        params.append(limit + 1)
        rows = [StoredFile(*row) for row in self.read(sql, tuple(params))]
        return rows[:limit], len(rows) > limit

    def delete_file(self, file_id: str) -> bool:
        with self.transaction() as con:
            changed = con.execute(f"UPDATE files SET deleted = 1 WHERE id = ? AND {self._LIVE}",
                                  (file_id, now())).rowcount
        if changed:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(changed)

    def purge_expired_files(self) -> int:
        """Removes the content of expired files that no unfinished batch still reads, and uploads a
        killed process left half-written (``*.part`` untouched for a day). Returns how many files."""
        stale = time.time() - 24 * 3600
        for partial in self.files_dir.glob("*.part"):
            try:
                if partial.stat().st_mtime < stale:
                    partial.unlink()
            except FileNotFoundError:  # finished or removed meanwhile
                pass
        marks = ",".join("?" * len(_ACTIVE_STATUSES))
        with self.transaction() as con:
            ids = [row[0] for row in con.execute(
                "SELECT id FROM files WHERE deleted = 0 AND expires_at IS NOT NULL AND expires_at <= ? AND id NOT IN"
                f" (SELECT input_file_id FROM batches WHERE status IN ({marks}))", (now(), *_ACTIVE_STATUSES))]
            con.executemany("UPDATE files SET deleted = 1 WHERE id = ?", [(file_id,) for file_id in ids])
        for file_id in ids:
            self.file_path(file_id).unlink(missing_ok=True)
        return len(ids)

    # -- batches -------------------------------------------------------------------------------
    def add_batch(
        self, *, endpoint: str, input_file_id: str, completion_window: str, window_seconds: float,
        metadata: dict[str, str] | None, settings: dict[str, Any], output_expires_after: int | None = None,
        enqueued: tuple[str, int, int] | None = None,
    ) -> dict[str, Any]:
        """A new batch. ``enqueued`` (model, input tokens, limit) applies an enqueued-token limit: if the model's
        live batches plus this one go past it, the batch is created and will fail validation, as on OpenAI."""
        batch_id = new_id("batch_")
        created = now()
        with self.transaction() as con:
            model = tokens = None
            if enqueued is not None:
                model, tokens, limit = enqueued
                live = con.execute(
                    "SELECT coalesce(sum(enqueued_tokens), 0) FROM batches WHERE enqueued_model = ? AND status IN "
                    "(?, ?, ?)", (model, *_ENQUEUED_STATUSES)).fetchone()[0]
                if live + tokens > limit:
                    settings = {**settings, "validation_errors": [{
                        "code": "token_limit_exceeded", "line": None, "param": None,
                        "message": f"Enqueued token limit reached for {model} in organization local. Limit: "
                                   f"{limit:,} enqueued tokens. Please try again once some in_progress batches "
                                   "have been completed."}]}
                    model = tokens = None
            con.execute(
                "INSERT INTO batches (id, status, endpoint, input_file_id, completion_window, created_at, expires_at,"
                " metadata, settings, output_expires_after, enqueued_model, enqueued_tokens)"
                " VALUES (?, 'validating', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    batch_id, endpoint, input_file_id, completion_window, created,
                    created + max(1, round(window_seconds)),
                    orjson.dumps(metadata).decode() if metadata is not None else None,
                    orjson.dumps(settings).decode(), output_expires_after, model, tokens,
                ),
            )
        row = self.get_batch_row(batch_id)
        assert row is not None  # inserted just above
        return row

    def get_batch_row(self, batch_id: str) -> dict[str, Any] | None:
        rows = self.read("SELECT * FROM batches WHERE id = ?", (batch_id,))
        return dict(rows[0]) if rows else None

    def list_batch_rows(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Newest first, like OpenAI; `after` is the id of the last batch of the previous page."""
        params: list[Any] = []
        sql = "SELECT * FROM batches"
        if after:
            sql += " WHERE seq < (SELECT seq FROM batches WHERE id = ?)"
            params.append(after)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit + 1)
        rows = [dict(r) for r in self.read(sql, tuple(params))]
        return rows[:limit], len(rows) > limit

    def active_batch_rows(self) -> list[dict[str, Any]]:
        """Every unfinished batch, oldest first."""
        marks = ",".join("?" * len(_ACTIVE_STATUSES))
        return [dict(r) for r in self.read(f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY seq",
                                           _ACTIVE_STATUSES)]

    def next_active_batch_id(self) -> str | None:
        marks = ",".join("?" * len(_ACTIVE_STATUSES))
        rows = self.read(f"SELECT id FROM batches WHERE status IN ({marks}) ORDER BY seq LIMIT 1", _ACTIVE_STATUSES)
        return rows[0]["id"] if rows else None

    def has_active_batches(self) -> bool:
        return self.next_active_batch_id() is not None

    def update_batch(self, batch_id: str, *, only_if_status: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Sets fields (JSON-encoding dicts/lists); with only_if_status, only from those statuses."""
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [orjson.dumps(v).decode() if isinstance(v, dict | list) else v for v in fields.values()]
        sql = f"UPDATE batches SET {assignments} WHERE id = ?"
        values.append(batch_id)
        if only_if_status:
            sql += f" AND status IN ({','.join('?' * len(only_if_status))})"
            values.extend(only_if_status)
        with self.transaction() as con:
            changed = con.execute(sql, tuple(values)).rowcount > 0
            if changed and ("output_file_id" in fields or "error_file_id" in fields):
                # The batch's result files expire as its creator asked (`output_expires_after`).
                con.execute(
                    "UPDATE files SET expires_at = created_at + (SELECT output_expires_after FROM batches WHERE id = ?)"
                    " WHERE id IN (?, ?) AND (SELECT output_expires_after FROM batches WHERE id = ?) IS NOT NULL",
                    (batch_id, fields.get("output_file_id"), fields.get("error_file_id"), batch_id),
                )
            return changed

    # -- per-item results ------------------------------------------------------------------------
    def done_line_numbers(self, batch_id: str) -> set[int]:
        return {row[0] for row in self.read("SELECT line_no FROM items WHERE batch_id = ?", (batch_id,))}

    def record_items(self, batch_id: str, results: list[tuple[int, bool, bytes]], usage: tuple[int, int]) -> None:
        """Stores finished items and bumps the batch's counts in one transaction (crash-safe resume)."""
        succeeded = sum(1 for _, ok, _ in results if ok)
        with self.transaction() as con:
            con.executemany(
                "INSERT OR IGNORE INTO items (batch_id, line_no, succeeded, result) VALUES (?, ?, ?, ?)",
                [(batch_id, line_no, int(ok), payload.decode()) for line_no, ok, payload in results],
            )
            con.execute(
                "UPDATE batches SET completed = completed + ?, failed = failed + ?,"
                " input_tokens = input_tokens + ?, output_tokens = output_tokens + ? WHERE id = ?",
                (succeeded, len(results) - succeeded, usage[0], usage[1], batch_id),
            )

    def mark_started(self, started: list[tuple[str, int]]) -> None:
        """Counts a start of each (batch id, line number) about to run."""
        with self.transaction() as con:
            con.executemany(
                "INSERT INTO item_starts (batch_id, line_no, starts) VALUES (?, ?, 1)"
                " ON CONFLICT (batch_id, line_no) DO UPDATE SET starts = starts + 1", started)

    def item_starts(self, batch_id: str) -> dict[int, int]:
        """How often each line of a batch was started (lines never started are absent)."""
        return {row[0]: row[1] for row in self.read("SELECT line_no, starts FROM item_starts WHERE batch_id = ?",
                                                    (batch_id,))}

    def iter_item_results(self, batch_id: str, *, succeeded: bool) -> Iterator[str]:
        cursor = self._connection().execute(
            "SELECT result FROM items WHERE batch_id = ? AND succeeded = ? ORDER BY line_no", (batch_id, int(succeeded))
        )
        for (result,) in cursor:
            yield result


def batch_row_to_api(row: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI Batch object for a stored row."""
    obj: dict[str, Any] = {
        "id": row["id"], "object": "batch", "endpoint": row["endpoint"],
        "errors": orjson.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"], "completion_window": row["completion_window"],
        "status": row["status"], "output_file_id": row["output_file_id"], "error_file_id": row["error_file_id"],
        "created_at": row["created_at"], "expires_at": row["expires_at"],
        "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else None,
        "model": row["model"],
        "usage": {
            "input_tokens": row["input_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": row["output_tokens"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": row["input_tokens"] + row["output_tokens"],
        },
    }
    for name in _BATCH_TIMESTAMP_FIELDS:
        obj[name] = row[name]
    return obj

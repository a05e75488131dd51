"""The only code that reads or writes the ledger's tables (SQLAlchemy Core: SQLite or PostgreSQL; see tables.py).

Rows are plain columns and JSON text, versioned by ``SCHEMA_VERSION`` with forward migrations, so a batch
submitted by one release of the code is collected by the next one. Every write is a short transaction;
SQLite runs in WAL mode with ``BEGIN IMMEDIATE`` writes, so runs, the sensor and the CLI (separate processes)
can share one file.

Submissions of one pipeline-month are serialized by a lease on its ``months`` row (an atomic compare-and-set
UPDATE, so it works the same on SQLite and PostgreSQL): whoever holds it plans or submits; anyone else waits,
then finds what the holder did.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from batch_assets.ledger.records import (
    OPEN_PLAN_STATES,
    FileState,
    LedgerError,
    MonthState,
    NewFile,
    PlanKind,
    PlanState,
    StoredFile,
    StoredMonth,
    StoredPlan,
)
from batch_assets.ledger.tables import SCHEMA_VERSION
from batch_assets.ledger.tables import files as _files
from batch_assets.ledger.tables import leases as _leases
from batch_assets.ledger.tables import meta as _meta
from batch_assets.ledger.tables import metadata as _metadata
from batch_assets.ledger.tables import months as _months
from batch_assets.ledger.tables import plans as _plans

DEFAULT_LEASE_SECONDS = 600.0


def _row(cls: type, row: RowMapping) -> Any:
    values = {f.name: row[f.name] for f in fields(cls)}
    for name, enum in (("state", {StoredMonth: MonthState, StoredPlan: PlanState, StoredFile: FileState}.get(cls)),
                       ("kind", PlanKind if cls is StoredPlan else None)):
        if enum is not None and name in values:
            values[name] = enum(values[name])
    if cls is StoredMonth:
        values["cancel_requested"] = bool(values["cancel_requested"])
    return cls(**values)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def ledger_url(data_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """``BATCH_ASSETS_LEDGER_URL`` if set, else a SQLite file beside the warehouse."""
    env = os.environ if env is None else env
    return (env.get("BATCH_ASSETS_LEDGER_URL") or "").strip() or _sqlite_url(Path(data_dir) / "ledger.sqlite3")


class Ledger:
    """One ledger database. Cheap to create; open one per run or sensor tick and close it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:
            path = url.split("///", 1)[1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._engine = sa.create_engine(url, connect_args={"timeout": 60, "isolation_level": None},
                                            poolclass=sa.pool.NullPool)
            sa.event.listen(self._engine, "connect", _sqlite_pragmas)
            sa.event.listen(self._engine, "begin", _sqlite_begin)
        else:
            self._engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)
        self._migrate()

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ----------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self._write() as con:
            _metadata.create_all(con, checkfirst=True)
            found = con.execute(sa.select(_meta.c.value).where(_meta.c.key == "schema_version")).scalar()
            if found is None:
                con.execute(_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(found) > SCHEMA_VERSION:
                raise LedgerError(
                    f"the ledger at {self.url} has schema version {found}, newer than this code knows "
                    f"({SCHEMA_VERSION}): upgrade batch_assets before running it against this ledger")
            elif int(found) < SCHEMA_VERSION:
                # Forward migrations, oldest first. 1 -> 2 added the leases table, which create_all made above.
                con.execute(_meta.update().where(_meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def schema_version(self) -> int:
        with self._engine.connect() as con:
            return int(con.execute(sa.select(_meta.c.value).where(_meta.c.key == "schema_version")).scalar_one())

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as con:
            con.execution_options(ledger_write=True)
            with con.begin():
                yield con

    # -- months ------------------------------------------------------------------------------------------
    def month(self, pipeline: str, month: str) -> StoredMonth | None:
        with self._engine.connect() as con:
            row = con.execute(sa.select(_months).where(_months.c.pipeline == pipeline, _months.c.month == month)
                              ).mappings().first()
        return _row(StoredMonth, row) if row else None

    def months(self, *, pipeline: str | None = None, states: Sequence[MonthState] | None = None
               ) -> list[StoredMonth]:
        query = sa.select(_months).order_by(_months.c.pipeline, _months.c.month)
        if pipeline is not None:
            query = query.where(_months.c.pipeline == pipeline)
        if states is not None:
            query = query.where(_months.c.state.in_([str(s) for s in states]))
        with self._engine.connect() as con:
            return [_row(StoredMonth, r) for r in con.execute(query).mappings()]

    def _ensure_month(self, con: Connection, pipeline: str, month: str) -> None:
        exists = con.execute(sa.select(_months.c.state).where(_months.c.pipeline == pipeline,
                                                              _months.c.month == month)).first()
        if exists is None:
            con.execute(_months.insert().values(pipeline=pipeline, month=month, state=str(MonthState.PLANNED),
                                                attempt=0, cancel_requested=False, updated_at=time.time()))

    def update_month(self, pipeline: str, month: str, **values: Any) -> None:
        values = {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in values.items()}
        with self._write() as con:
            self._ensure_month(con, pipeline, month)
            con.execute(_months.update().where(_months.c.pipeline == pipeline, _months.c.month == month)
                        .values(updated_at=time.time(), **values))

    # -- the per-month lease: serializes planning and submitting ------------------------------------------
    def try_lease(self, pipeline: str, month: str, owner: str, seconds: float = DEFAULT_LEASE_SECONDS) -> bool:
        now = time.time()
        with self._write() as con:
            self._ensure_month(con, pipeline, month)
            taken = con.execute(
                _months.update()
                .where(_months.c.pipeline == pipeline, _months.c.month == month,
                       sa.or_(_months.c.lease_owner.is_(None), _months.c.lease_owner == owner,
                              _months.c.lease_expires_at < now))
                .values(lease_owner=owner, lease_expires_at=now + seconds)
            ).rowcount
        return bool(taken)

    def release_lease(self, pipeline: str, month: str, owner: str) -> None:
        with self._write() as con:
            con.execute(_months.update()
                        .where(_months.c.pipeline == pipeline, _months.c.month == month,
                               _months.c.lease_owner == owner)
                        .values(lease_owner=None, lease_expires_at=None))

    @contextmanager
    def month_lease(self, pipeline: str, month: str, *, wait_seconds: float = 900.0,
                    lease_seconds: float = DEFAULT_LEASE_SECONDS, poll_seconds: float = 0.2) -> Iterator[str]:
        """Holds the month's lease for the block (waiting for another holder to finish first).

        A holder that died leaves a lease that expires after ``lease_seconds``; a holder that works longer
        renews it with :meth:`renew_lease`.
        """
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + wait_seconds
        while not self.try_lease(pipeline, month, owner, lease_seconds):
            if time.monotonic() > deadline:
                current = self.month(pipeline, month)
                holder = current.lease_owner if current else "?"
                raise LedgerError(
                    f"{pipeline} {month[:7]} is being submitted by another process ({holder}) for more than "
                    f"{wait_seconds:.0f} s: wait for it to finish, or if that process died, retry after its lease "
                    f"expires (at most {lease_seconds:.0f} s)")
            time.sleep(poll_seconds)
        try:
            yield owner
        finally:
            self.release_lease(pipeline, month, owner)

    @contextmanager
    def named_lease(self, name: str, *, wait_seconds: float = 300.0, lease_seconds: float = 60.0,
                    poll_seconds: float = 0.05) -> Iterator[str]:
        """Holds a named lease for a short block (e.g. deciding whether a model has enqueued-token capacity)."""
        owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        deadline = time.monotonic() + wait_seconds
        while True:
            now = time.time()
            with self._write() as con:
                if con.execute(sa.select(_leases.c.name).where(_leases.c.name == name)).first() is None:
                    con.execute(_leases.insert().values(name=name, owner=None, expires_at=None))
                taken = con.execute(_leases.update().where(
                    _leases.c.name == name, sa.or_(_leases.c.owner.is_(None), _leases.c.expires_at < now))
                    .values(owner=owner, expires_at=now + lease_seconds)).rowcount
            if taken:
                break
            if time.monotonic() > deadline:
                raise LedgerError(f"the ledger lease {name!r} is held by another process for more than "
                                  f"{wait_seconds:.0f} s: try again; a dead holder's lease expires after "
                                  f"{lease_seconds:.0f} s")
            time.sleep(poll_seconds)
        try:
            yield owner
        finally:
            with self._write() as con:
                con.execute(_leases.update().where(_leases.c.name == name, _leases.c.owner == owner)
                            .values(owner=None, expires_at=None))

    def renew_lease(self, pipeline: str, month: str, owner: str,
                    seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        if not self.try_lease(pipeline, month, owner, seconds):
            raise LedgerError(f"lost the submission lease of {pipeline} {month[:7]}: another process took it over")

    # -- plans -------------------------------------------------------------------------------------------
    def next_attempt(self, pipeline: str, month: str) -> int:
        with self._engine.connect() as con:
            found = con.execute(sa.select(sa.func.max(_plans.c.attempt))
                                .where(_plans.c.pipeline == pipeline, _plans.c.month == month)).scalar()
        return int(found or 0) + 1

    def add_plan(self, *, pipeline: str, month: str, attempt: int, kind: PlanKind, endpoint: str, settings: str,
                 n_items: int, files: Sequence[NewFile], root_plan_id: int | None = None,
                 estimate: str | None = None, not_before: float | None = None, run_id: str | None = None
                 ) -> StoredPlan:
        """Records a plan and its files; a plan of the month that was never submitted is superseded."""
        now = time.time()
        with self._write() as con:
            self._ensure_month(con, pipeline, month)
            con.execute(_plans.update()
                        .where(_plans.c.pipeline == pipeline, _plans.c.month == month,
                               _plans.c.state == str(PlanState.PLANNED))
                        .values(state=str(PlanState.SUPERSEDED)))
            con.execute(_files.update()
                        .where(_files.c.pipeline == pipeline, _files.c.month == month,
                               _files.c.state == str(FileState.PLANNED))
                        .values(state=str(FileState.CANCELLED)))
            inserted = con.execute(_plans.insert().values(
                pipeline=pipeline, month=month, attempt=attempt, kind=str(kind), root_plan_id=root_plan_id,
                endpoint=endpoint, settings=settings, state=str(PlanState.PLANNED), n_items=n_items,
                n_requests=sum(f.n_requests for f in files), input_tokens=sum(f.input_tokens for f in files),
                estimate=estimate, not_before=not_before, run_id=run_id, created_at=now,
            )).inserted_primary_key
            assert inserted is not None  # an INSERT of one row always has its key
            plan_id = inserted[0]
            if kind != PlanKind.RETRY:
                con.execute(_plans.update().where(_plans.c.plan_id == plan_id).values(root_plan_id=plan_id))
            for f in files:
                con.execute(_files.insert().values(
                    plan_id=plan_id, sha256=f.sha256, pipeline=pipeline, month=month, attempt=attempt, path=f.path,
                    url=f.url, model=f.model, n_requests=f.n_requests, input_tokens=f.input_tokens,
                    max_output_tokens=f.max_output_tokens, state=str(FileState.PLANNED), tries=0, completed=0,
                    failed=0, total=f.n_requests, created_at=now))
            root = plan_id if kind != PlanKind.RETRY else root_plan_id
            con.execute(_months.update().where(_months.c.pipeline == pipeline, _months.c.month == month).values(
                attempt=attempt, root_plan_id=root, updated_at=now,
                state=str(MonthState.RETRYING if kind == PlanKind.RETRY else MonthState.PLANNED),
                cancel_requested=False))
        plan = self.plan(int(plan_id))
        assert plan is not None
        return plan

    def plan(self, plan_id: int) -> StoredPlan | None:
        with self._engine.connect() as con:
            row = con.execute(sa.select(_plans).where(_plans.c.plan_id == plan_id)).mappings().first()
        return _row(StoredPlan, row) if row else None

    def plans(self, pipeline: str, month: str, *, states: Sequence[PlanState] | None = None) -> list[StoredPlan]:
        """The month's plans, oldest first."""
        query = (sa.select(_plans).where(_plans.c.pipeline == pipeline, _plans.c.month == month)
                 .order_by(_plans.c.plan_id))
        if states is not None:
            query = query.where(_plans.c.state.in_([str(s) for s in states]))
        with self._engine.connect() as con:
            return [_row(StoredPlan, r) for r in con.execute(query).mappings()]

    def plans_with_roots(self, root_plan_ids: Sequence[int]) -> list[StoredPlan]:
        """Every plan of the given root plans (a month's current items and their retries), oldest first."""
        query = sa.select(_plans).order_by(_plans.c.plan_id)
        found: list[StoredPlan] = []
        with self._engine.connect() as con:
            for chunk in _chunks(sorted(set(root_plan_ids))):
                found += [_row(StoredPlan, r) for r in con.execute(query.where(_plans.c.root_plan_id.in_(chunk)))
                          .mappings()]
        return sorted(found, key=lambda plan: plan.plan_id)

    def open_plans(self, pipeline: str | None = None) -> list[StoredPlan]:
        """Plans not yet collected (planned, submitting, submitted), oldest first."""
        query = sa.select(_plans).where(_plans.c.state.in_([str(s) for s in OPEN_PLAN_STATES]))
        if pipeline is not None:
            query = query.where(_plans.c.pipeline == pipeline)
        with self._engine.connect() as con:
            return [_row(StoredPlan, r) for r in con.execute(query.order_by(_plans.c.plan_id)).mappings()]

    def set_plan_state(self, plan_id: int, state: PlanState, **values: Any) -> None:
        extra = {"collected_at": time.time()} if state == PlanState.COLLECTED else {}
        with self._write() as con:
            con.execute(_plans.update().where(_plans.c.plan_id == plan_id)
                        .values(state=str(state), **extra, **values))

    # -- files -------------------------------------------------------------------------------------------
    def files(self, *, plan_id: int | None = None, pipeline: str | None = None, month: str | None = None,
              states: Sequence[FileState] | None = None, plan_ids: Sequence[int] | None = None
              ) -> list[StoredFile]:
        """Files by plan, path; ``plan_ids`` reads many plans' files in one go (a sensor tick over many months)."""
        query = sa.select(_files).order_by(_files.c.plan_id, _files.c.path)
        for column, value in ((_files.c.plan_id, plan_id), (_files.c.pipeline, pipeline),
                              (_files.c.month, month)):
            if value is not None:
                query = query.where(column == value)
        if states is not None:
            query = query.where(_files.c.state.in_([str(s) for s in states]))
        if plan_ids is None:
            with self._engine.connect() as con:
                return [_row(StoredFile, r) for r in con.execute(query).mappings()]
        found: list[StoredFile] = []
        with self._engine.connect() as con:
            for chunk in _chunks(sorted(set(plan_ids))):
                found += [_row(StoredFile, r) for r in con.execute(query.where(_files.c.plan_id.in_(chunk)))
                          .mappings()]
        return found

    def file(self, plan_id: int, sha256: str) -> StoredFile | None:
        found = self.files(plan_id=plan_id)
        return next((f for f in found if f.sha256 == sha256), None)

    def update_file(self, plan_id: int, sha256: str, *, only_if_states: Sequence[FileState] | None = None,
                    **values: Any) -> bool:
        values = {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in values.items()}
        query = _files.update().where(_files.c.plan_id == plan_id, _files.c.sha256 == sha256)
        if only_if_states is not None:
            query = query.where(_files.c.state.in_([str(s) for s in only_if_states]))
        with self._write() as con:
            return bool(con.execute(query.values(**values)).rowcount)

    def update_files(self, updates: Sequence[tuple[int, str, Mapping[str, Any]]]) -> None:
        """Several file updates in one transaction (a sensor tick's progress)."""
        if not updates:
            return
        with self._write() as con:
            for plan_id, sha256, values in updates:
                con.execute(_files.update().where(_files.c.plan_id == plan_id, _files.c.sha256 == sha256)
                            .values(**{k: (str(v) if isinstance(v, StrEnum) else v) for k, v in values.items()}))


def _chunks(values: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    """Bounded ``IN (...)`` lists: SQLite caps the number of bound parameters per statement."""
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # Writes take the write lock up front: a deferred transaction that reads then writes can fail at once
    # with "database is locked" when another process wrote in between (SQLite cannot wait in that case).
    # Reads stay deferred, so a sensor tick never waits behind a run's write.
    immediate = connection.get_execution_options().get("ledger_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

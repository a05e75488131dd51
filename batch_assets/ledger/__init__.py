"""The batch ledger: the durable record of what was submitted for each pipeline-month. No Dagster import.

It holds the control plane: plans (one per submission attempt, with the settings they were built with),
request files (content-addressed, never rewritten) with their idempotency keys, file ids, batch ids and
statuses, and one row of state per pipeline-month. It is a small SQL database (SQLite beside the warehouse
by default, any SQLAlchemy URL such as PostgreSQL when runs spread over several machines), so the sensor
reads it at every tick without touching the DuckDB warehouse, whose write lock a run may hold. Per-item rows
(what each item was submitted as, and its outcomes) are bulk data and live in the warehouse.
"""

from batch_assets.ledger.records import (
    FileState,
    LedgerError,
    MonthState,
    PlanKind,
    PlanState,
    StoredFile,
    StoredMonth,
    StoredPlan,
)
from batch_assets.ledger.store import Ledger

__all__ = [
    "FileState",
    "Ledger",
    "LedgerError",
    "MonthState",
    "PlanKind",
    "PlanState",
    "StoredFile",
    "StoredMonth",
    "StoredPlan",
]

"""The ledger's SQL tables (SQLAlchemy Core, the same on SQLite and PostgreSQL) and their schema version.

:mod:`batch_assets.ledger.store` is the only code that reads or writes them.
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_VERSION = 2  # 2: the leases table

metadata = sa.MetaData()
meta = sa.Table(
    "ledger_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
leases = sa.Table(  # named leases besides the per-month ones (e.g. a model's enqueued-token capacity)
    "leases", metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("owner", sa.String(128)),
    sa.Column("expires_at", sa.Float),
)
months = sa.Table(
    "months", metadata,
    sa.Column("pipeline", sa.String(128), primary_key=True),
    sa.Column("month", sa.String(10), primary_key=True),  # ISO date of the month's first day
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),  # the latest plan's attempt number
    sa.Column("root_plan_id", sa.Integer),  # the plan whose items are the month's current items
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("summary", sa.Text),  # JSON: outcome counts and the like, for status displays
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)
plans = sa.Table(
    "plans", metadata,
    sa.Column("plan_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column("month", sa.String(10), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("root_plan_id", sa.Integer),  # retries point at the plan that fixed the month's items
    sa.Column("endpoint", sa.String(64), nullable=False),
    sa.Column("settings", sa.Text, nullable=False),  # JSON, exactly as the requests were built
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("n_items", sa.Integer, nullable=False),  # items of the month in this plan
    sa.Column("n_requests", sa.Integer, nullable=False),  # of them, written to request files
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("estimate", sa.Text),  # JSON
    sa.Column("not_before", sa.Float),  # a retry waits until then
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("collected_at", sa.Float),
    sa.Index("plans_month", "pipeline", "month"),
)
files = sa.Table(
    "files", metadata,
    sa.Column("plan_id", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("pipeline", sa.String(128), nullable=False),
    sa.Column("month", sa.String(10), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("url", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("n_requests", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("max_output_tokens", sa.BigInteger),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, default=0),  # creates attempted for this file
    sa.Column("idempotency_key", sa.String(64)),
    sa.Column("upload_file_id", sa.String(128)),
    sa.Column("batch_id", sa.String(128)),
    sa.Column("batch_status", sa.String(32)),
    sa.Column("completed", sa.Integer, nullable=False, default=0),
    sa.Column("failed", sa.Integer, nullable=False, default=0),
    sa.Column("total", sa.Integer, nullable=False, default=0),
    sa.Column("error_code", sa.String(128)),
    sa.Column("error_message", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("submitted_at", sa.Float),
    sa.Column("progress_at", sa.Float),  # when request counts last moved (stall detection)
    sa.Column("ended_at", sa.Float),
    sa.Column("collected_at", sa.Float),
    sa.Index("files_state", "state"),
    sa.Index("files_month", "pipeline", "month"),
    sa.Index("files_batch", "batch_id"),
)

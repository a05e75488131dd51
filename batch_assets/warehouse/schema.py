"""The DuckDB warehouse's tables, in one place, and how to open it.

Every table is keyed by `month` (the first day of a month, a Dagster partition). `batch_outcomes` and
`batch_costs` also carry a `pipeline` column: several pipelines share them, and each replaces only its own
rows.
`document_embeddings.embedding` is a fixed-size `FLOAT[N]` array; N is fixed when the first embeddings are
written (the table is created then, not by `ensure_schema`).

Output tables the warehouse does not ship (a pipeline declared in YAML, the README's fourth one) are declared
per connection (`connect(tables=...)`, which the Dagster warehouse resource passes), never in a global: once
created, such a table describes itself — its columns from the database's catalog, its key from its primary key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import duckdb
import polars as pl

DEFAULT_DUCKDB_PATH = Path(".batch_assets") / "warehouse.duckdb"
# DuckDB's buffer limit (it spills to disk past it). With 512MB each step of a month's collect stays under 1 GB
# RSS in all (benchmarks/bench_collect.py: a million chat answers, 50k x 1536-float embeddings); 1GB took it to
# ~1.1-1.4 GB, DuckDB's own default (80% of RAM) further.
DEFAULT_MEMORY_LIMIT = "512MB"
MEMORY_LIMIT_ENV = "BATCH_ASSETS_DUCKDB_MEMORY_LIMIT"  # overrides DEFAULT_MEMORY_LIMIT (e.g. "2GB")


def out_of_memory_hint(error: BaseException) -> str:
    """What to do when DuckDB ran out of its memory limit (empty for other errors)."""
    if "out of memory" not in str(error).lower():
        return ""
    return (f" DuckDB reached its memory limit ({MEMORY_LIMIT_ENV}, {DEFAULT_MEMORY_LIMIT} unless set): set it "
            "higher (e.g. 2GB) where the runs start and launch the run again")
EMBEDDINGS_TABLE = "document_embeddings"
DISABLED_FLOAT_CODECS = "alp,alprd"  # DuckDB's float codecs: never tried on writes (see connect)
EMBEDDING_COLUMN = "embedding"

# Column → DuckDB type. "FLOAT[N]" stands for the array width chosen at the first write.
_SHIPPED_TABLES: dict[str, dict[str, str]] = {
    "raw_documents": {
        "month": "DATE",
        "id": "VARCHAR",
        "text": "VARCHAR",
        "created_at": "TIMESTAMP",
        "label": "VARCHAR",
    },
    "company_metrics": {
        "month": "DATE",
        "company": "VARCHAR",
        "revenue_usd": "DOUBLE",
        "revenue_growth_pct": "DOUBLE",
        "gross_margin_pct": "DOUBLE",
        "active_customers": "BIGINT",
        "churn_pct": "DOUBLE",
        "support_tickets": "BIGINT",
        "nps": "BIGINT",
    },
    EMBEDDINGS_TABLE: {
        "month": "DATE",
        "document_id": "VARCHAR",
        "model": "VARCHAR",
        "dims": "INTEGER",
        EMBEDDING_COLUMN: "FLOAT[N]",
        "batch_id": "VARCHAR",
        "attempt": "INTEGER",
    },
    "document_labels": {
        "month": "DATE",
        "document_id": "VARCHAR",
        "model": "VARCHAR",
        "label": "VARCHAR",
        "gold_label": "VARCHAR",
        "raw_content": "VARCHAR",
        "batch_id": "VARCHAR",
        "attempt": "INTEGER",
    },
    "monthly_reports": {
        "month": "DATE",
        "company": "VARCHAR",
        "model": "VARCHAR",
        "report": "VARCHAR",
        "completion_tokens": "BIGINT",
        "batch_id": "VARCHAR",
        "attempt": "INTEGER",
    },
    # The ledger's per-item half: every item of every plan, as it was submitted (or why it was not).
    "batch_requests": {
        "pipeline": "VARCHAR",
        "month": "DATE",
        "plan_id": "BIGINT",
        "attempt": "INTEGER",
        "item_id": "VARCHAR",
        "custom_id": "VARCHAR",
        "body_sha256": "VARCHAR",
        "file_sha256": "VARCHAR",  # the request file it went out in; NULL when it needed no new answer
        "input_tokens": "BIGINT",
        "source": "VARCHAR",  # submitted | reused (an earlier attempt already answered this body) | cache
    },
    "batch_outcomes": {
        "pipeline": "VARCHAR",
        "month": "DATE",
        "custom_id": "VARCHAR",
        "item_id": "VARCHAR",
        "attempt": "INTEGER",
        "batch_id": "VARCHAR",
        "outcome": "VARCHAR",
        "status_code": "INTEGER",
        "error_code": "VARCHAR",
        "error_message": "VARCHAR",
        "response_model": "VARCHAR",
        "prompt_tokens": "BIGINT",
        "completion_tokens": "BIGINT",
        "cached_tokens": "BIGINT",
        "reasoning_tokens": "BIGINT",
        "plan_id": "BIGINT",
        "body_sha256": "VARCHAR",
        "final": "BOOLEAN",  # this row is the item's final outcome (exactly one per item once the month is done)
        "requested_model": "VARCHAR",  # the model the request named (response_model is the one that answered)
        "source": "VARCHAR",  # batch (answered by its batch) | cache (an identical request's earlier answer)
    },
    "batch_costs": {
        "pipeline": "VARCHAR",
        "month": "DATE",
        "batch_id": "VARCHAR",
        "model": "VARCHAR",
        "requests": "BIGINT",
        "prompt_tokens": "BIGINT",
        "completion_tokens": "BIGINT",
        "cached_tokens": "BIGINT",  # of prompt_tokens, served from the provider's prompt cache (cheaper)
        "reasoning_tokens": "BIGINT",  # of completion_tokens, spent reasoning (billed as output)
        "batch_usd": "DOUBLE",
        "standard_usd": "DOUBLE",
        "saving_usd": "DOUBLE",
    },
}
# The tables every warehouse has; read-only, so nothing can add to them for everybody.
TABLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {table: MappingProxyType(columns) for table, columns in _SHIPPED_TABLES.items()})
PIPELINE_TABLES = frozenset({"batch_requests", "batch_outcomes", "batch_costs"})
# Row order of reads.
TABLE_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "raw_documents": ("month", "id"),
    "company_metrics": ("month", "company"),
    EMBEDDINGS_TABLE: ("month", "document_id", "model"),
    "document_labels": ("month", "document_id", "model"),
    "monthly_reports": ("month", "company", "model"),
    "batch_requests": ("pipeline", "month", "plan_id", "item_id"),
    "batch_outcomes": ("pipeline", "month", "custom_id", "attempt"),
    "batch_costs": ("pipeline", "month", "batch_id", "model"),
})

_POLARS_TYPES: dict[str, pl.DataType] = {
    "DATE": pl.Date(),
    "VARCHAR": pl.String(),
    "TIMESTAMP": pl.Datetime("us"),
    "DOUBLE": pl.Float64(),
    "BIGINT": pl.Int64(),
    "INTEGER": pl.Int32(),
    "BOOLEAN": pl.Boolean(),
    "FLOAT[N]": pl.List(pl.Float32()),
    "FLOAT[]": pl.List(pl.Float32()),  # vectors of any length, for declared tables (a YAML embeddings pipeline)
}
# Column types a declared table may use.
DECLARABLE_TYPES = tuple(t for t in _POLARS_TYPES if t != "FLOAT[N]")


class WarehouseError(RuntimeError):
    """A warehouse operation that cannot go ahead; the message says what to do."""


def quote(name: str) -> str:
    """A SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def check_table(table: str) -> Mapping[str, str]:
    """The columns of a table the warehouse ships; a clear error for any other name."""
    if table not in TABLES:
        raise WarehouseError(f"unknown warehouse table {table!r}: use one of {', '.join(TABLES)}, or declare it "
                             "as a pipeline's output table")
    return TABLES[table]


@dataclass(frozen=True)
class TableDeclaration:
    """An output table the warehouse does not ship: its columns (name → DuckDB type, with `month` DATE) and the
    columns that identify a row within the table (its primary key, `month` first)."""

    name: str
    columns: Mapping[str, str]
    key: tuple[str, ...] = field(default=("month",))

    def __post_init__(self) -> None:
        if self.name in TABLES:
            raise WarehouseError(f"{self.name} is a table the warehouse ships: give the output table another name")
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.name):
            raise WarehouseError(f"table name {self.name!r}: use lower-case letters, digits and underscores")
        if self.columns.get("month") != "DATE":
            raise WarehouseError(f"table {self.name} needs a 'month' DATE column: every table is partitioned by "
                                 "month")
        unknown = sorted({t for t in self.columns.values() if t not in DECLARABLE_TYPES})
        if unknown:
            raise WarehouseError(f"table {self.name}: unsupported column types {unknown}; use "
                                 f"{', '.join(DECLARABLE_TYPES)}")
        if not self.key or self.key[0] != "month" or any(k not in self.columns for k in self.key):
            raise WarehouseError(f"table {self.name}: its key {list(self.key)} must start with 'month' and name "
                                 "columns of the table")


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """The columns of a shipped table, or of a declared table as this warehouse holds it."""
    if table in TABLES:
        return dict(TABLES[table])
    columns = _existing_columns(con).get(table)
    if not columns:
        raise WarehouseError(f"unknown warehouse table {table!r}: use one of {', '.join(TABLES)}, or declare it "
                             "as a pipeline's output table (the warehouse creates it when a run opens it)")
    return columns


def table_key(con: duckdb.DuckDBPyConnection, table: str) -> tuple[str, ...]:
    """The columns reads are ordered by: a shipped table's key, a declared table's primary key (all its
    columns for a table an older release created without one)."""
    if table in TABLE_KEYS:
        return TABLE_KEYS[table]
    rows = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = ? "
        "AND schema_name = current_schema() AND constraint_type = 'PRIMARY KEY'", [table]).fetchall()
    return tuple(rows[0][0]) if rows else tuple(table_columns(con, table))


def polars_schema(table: str | Mapping[str, str]) -> dict[str, pl.DataType]:
    """The polars schema of a read of a shipped table, or of a table with these columns (embedding:
    List(Float32) while document_embeddings does not exist)."""
    columns = check_table(table) if isinstance(table, str) else table
    return {name: _POLARS_TYPES.get(sql, pl.List(pl.Float32())) for name, sql in columns.items()}


def connect(
    path: str | Path = DEFAULT_DUCKDB_PATH,
    *,
    read_only: bool = False,
    memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
    tables: Iterable[TableDeclaration] = (),
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file (creating its folder and the tables that are missing unless read-only).

    `memory_limit` caps DuckDB's buffers (None keeps DuckDB's default of 80% of RAM; the default is
    `BATCH_ASSETS_DUCKDB_MEMORY_LIMIT` when set). `tables` are output tables
    the warehouse does not ship: created when missing, like the shipped ones.
    """
    path = Path(path).expanduser()
    if read_only and not path.exists():
        raise WarehouseError(f"no warehouse at {path} yet: materialize a month of a pipeline first")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise WarehouseError(
                f"{path} is open for writing in another process; DuckDB allows one writer at a time: wait "
                "for it to finish, and give the assets that write DuckDB a concurrency pool with limit 1 "
                f"({error})"
            ) from error
        raise
    if memory_limit == DEFAULT_MEMORY_LIMIT:
        memory_limit = os.environ.get(MEMORY_LIMIT_ENV, "").strip() or DEFAULT_MEMORY_LIMIT
    try:
        if memory_limit is not None:
            con.execute(f"SET memory_limit = '{memory_limit.replace(chr(39), '')}'").fetchall()
        if not read_only:
            # Embedding vectors do not compress (random mantissas: 298 MB with DuckDB's float codecs for 50,000
            # x 1536, 293 MB without), but trying ALP on them cost ~1.2 s per 50,000 at each checkpoint.
            con.execute(f"SET disabled_compression_methods = '{DISABLED_FLOAT_CODECS}'").fetchall()
            ensure_schema(con, tables)
    except duckdb.Error as error:
        con.close()
        hint = out_of_memory_hint(error)
        if not hint:
            raise
        raise WarehouseError(f"opening {path} failed: {str(error).splitlines()[0]}.{hint}") from error
    return con


def ensure_schema(con: duckdb.DuckDBPyConnection, tables: Iterable[TableDeclaration] = ()) -> None:
    """Create every table that is missing (document_embeddings waits for its first write, which fixes N), and
    add the columns a newer release declares to tables an older one created (they read as NULL there).
    `tables` are declared output tables, created with their key as primary key."""
    existing = _existing_columns(con)
    wanted: list[tuple[str, Mapping[str, str], tuple[str, ...]]] = [
        (table, columns, ()) for table, columns in TABLES.items()]
    wanted += [(declared.name, declared.columns, declared.key) for declared in tables]
    for table, columns, key in wanted:
        if table == EMBEDDINGS_TABLE and table not in existing:
            continue
        if table not in existing:
            con.execute(create_table_sql(table, columns, key=key)).fetchall()
            continue
        for column, sql_type in columns.items():
            if column not in existing[table] and "[N]" not in sql_type:
                con.execute(f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column)} {sql_type}").fetchall()
            elif key and column in existing[table] and existing[table][column] != sql_type:
                raise WarehouseError(
                    f"{table}.{column} is {existing[table][column]} in this warehouse but declared {sql_type}: "
                    f"declare it as it is, or drop the table (DROP TABLE {table}) to start over")


def _existing_columns(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
    """Table → column → DuckDB type, in column order, of the tables this warehouse holds."""
    found: dict[str, dict[str, str]] = {}
    for table, column, sql_type in con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall():
        found.setdefault(table, {})[column] = sql_type
    return found


def create_table_sql(table: str, columns: Mapping[str, str], dims: int | None = None,
                     key: tuple[str, ...] = ()) -> str:
    body = ", ".join(f"{quote(c)} {t.replace('[N]', f'[{dims}]')}" for c, t in columns.items())
    primary_key = f", PRIMARY KEY ({', '.join(quote(k) for k in key)})" if key else ""
    return f"CREATE TABLE IF NOT EXISTS {quote(table)} ({body}{primary_key})"


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema()",
        [table],
    ).fetchall()
    return bool(rows[0][0])


def embedding_dims(con: duckdb.DuckDBPyConnection) -> int | None:
    """N of document_embeddings' FLOAT[N] column, or None before the first embeddings are written."""
    rows = con.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_name = ? AND column_name = ? "
        "AND table_schema = current_schema()",
        [EMBEDDINGS_TABLE, EMBEDDING_COLUMN],
    ).fetchall()
    if not rows:
        return None
    match = re.fullmatch(r"FLOAT\[(\d+)\]", rows[0][0])
    if match is None:
        raise WarehouseError(
            f"{EMBEDDINGS_TABLE}.{EMBEDDING_COLUMN} is {rows[0][0]}, not FLOAT[N]: drop the table "
            f"(DROP TABLE {EMBEDDINGS_TABLE}) to start over"
        )
    return int(match.group(1))


def dims_mismatch(existing: int, dims: int) -> WarehouseError:
    return WarehouseError(
        f"{EMBEDDINGS_TABLE} holds FLOAT[{existing}] vectors; this write has {dims} dims: keep `dimensions` "
        f"the same or drop the table (DROP TABLE {EMBEDDINGS_TABLE}) to start over"
    )


def ensure_embeddings_table(con: duckdb.DuckDBPyConnection, dims: int) -> None:
    """Create document_embeddings with FLOAT[dims], or check that the existing table has that width."""
    if dims <= 0:
        raise WarehouseError(f"embeddings need at least one dimension; this write has {dims}")
    existing = embedding_dims(con)
    if existing is None:
        con.execute(create_table_sql(EMBEDDINGS_TABLE, TABLES[EMBEDDINGS_TABLE], dims)).fetchall()
    elif existing != dims:
        raise dims_mismatch(existing, dims)

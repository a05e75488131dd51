"""A month's source rows joined with their answers, streamed in chunks: what the output tables are built from.

The join runs in DuckDB (the source table, the answers wanted, and each batch's results Parquet file), and the
rows come back as polars frames of a bounded size, so building a month of a million answers never holds the
month's texts or payloads in Python at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from batch_assets.sources import month_start
from batch_assets.warehouse.schema import WarehouseError, out_of_memory_hint, quote, table_columns
from batch_assets.warehouse.writes import ArrowStream

# Columns the join adds beside the source's own (the payload columns come from the results files).
ANSWER_KEY_COLUMNS = ("item_id", "attempt", "batch_id")


def stream_answered_items(con: duckdb.DuckDBPyConnection, source_table: str, id_column: str, month: date,
                          wanted: pl.DataFrame, results_files: Mapping[str, Path], payload_schema: pl.Schema,
                          *, chunk_rows: int, source_columns: Sequence[str] | None = None) -> Iterator[pl.DataFrame]:
    """The month's `source_table` rows whose `id_column` (as a string, `item_id`) is in `wanted` (item_id,
    batch_id, custom_id, attempt), each with the payload its answer left in its batch's results file
    (`results_files[batch_id]`, a Parquet file with `custom_id` and the `payload_schema` columns), in frames of at most
    `chunk_rows` rows, with only `source_columns` of the source's (None: all). Yields at least one (maybe empty)
    frame, so the caller always learns the columns."""
    payload_columns = [c for c in payload_schema if c != "custom_id"]
    all_columns = list(table_columns(con, source_table))
    if id_column not in all_columns:
        raise WarehouseError(f"{source_table} has no {id_column!r} column; found {all_columns}")
    # The answer's columns win over a source column of the same name.
    unknown = [c for c in source_columns or () if c not in all_columns]
    if unknown:
        raise WarehouseError(f"{source_table} has no column {', '.join(map(repr, unknown))}; found {all_columns}")
    selected = [c for c in (all_columns if source_columns is None else source_columns)
                if c not in (*ANSWER_KEY_COLUMNS, *payload_columns)]
    wanted_name, empty_name = (f"_batch_assets_{what}_{uuid.uuid4().hex}" for what in ("wanted", "no_answers"))
    paths = {batch_id: str(path) for batch_id, path in results_files.items()}
    keyed = wanted.select("item_id", "batch_id", "custom_id", pl.col("attempt").cast(pl.Int32))
    if paths:
        # Each file's batch id is a column of the scan (a literal per file), so the join keys stay short.
        payload_source = "(" + " UNION ALL BY NAME ".join(
            f"SELECT *, '{batch_id.replace(chr(39), chr(39) * 2)}' AS results_batch_id "
            f"FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}')" for batch_id, path in sorted(paths.items())
        ) + ")"
    else:  # nothing answered: the same columns and types, no rows
        payload_source = quote(empty_name)
    sql = f"""
        SELECT {''.join('s.' + quote(c) + ', ' for c in selected)}w.item_id,
               {', '.join('p.' + quote(c) for c in payload_columns)}, w.attempt, w.batch_id
        FROM {quote(source_table)} s
        JOIN {quote(wanted_name)} w ON CAST(s.{quote(id_column)} AS VARCHAR) = w.item_id
        JOIN {payload_source} p ON p.custom_id = w.custom_id AND p.results_batch_id = w.batch_id
        WHERE s.month = $month
    """
    # A cursor of its own: the rows stream while the caller works, and an abandoned stream dies with it
    # instead of holding the caller's connection.
    cursor = con.cursor()
    try:
        cursor.execute("SET preserve_insertion_order = false").fetchall()  # the rows' order does not matter here
        cursor.register(wanted_name, ArrowStream(keyed))
        if not paths:
            cursor.register(empty_name, ArrowStream(payload_schema.to_frame().with_columns(
                pl.lit(None, pl.String).alias("custom_id"), pl.lit(None, pl.String).alias("results_batch_id"))))
        reader: Any = None
        yielded = False
        while True:
            try:
                if reader is None:
                    reader = cursor.sql(sql, params={"month": month_start(month)}).to_arrow_reader(chunk_rows)
                record_batch = reader.read_next_batch()
            except StopIteration:
                break
            except (duckdb.Error, OSError) as error:  # DuckDB's errors reach here through Arrow as OSError
                hint = out_of_memory_hint(error)
                if not hint:
                    raise
                raise WarehouseError(f"reading the answers of {month:%Y-%m} from {source_table} failed: "
                                     f"{str(error).splitlines()[0]}.{hint}") from error
            if record_batch.num_rows:
                yielded = True
                yield pl.DataFrame(pl.from_arrow(record_batch))
        if not yielded:
            yield pl.DataFrame(pl.from_arrow(reader.schema.empty_table()))
    finally:
        cursor.close()


def duplicated_ids(con: duckdb.DuckDBPyConnection, source_table: str, id_column: str, month: date,
                   limit: int = 3) -> list[str]:
    """Up to `limit` ids of `source_table` that more than one row of the month holds."""
    rows = con.execute(
        f"SELECT CAST({quote(id_column)} AS VARCHAR) AS id FROM {quote(source_table)} WHERE month = $month "
        f"GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT {int(limit)}", {"month": month_start(month)}).fetchall()
    return [row[0] for row in rows]

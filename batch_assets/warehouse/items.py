"""The ledger's per-item half in the warehouse: what each item was submitted as, and where each item stands.

`batch_requests` holds one row per item per plan (its custom_id, body hash, the request file it went out in);
`batch_outcomes` one row per item per attempt that came back. An item's body hash ties the two: an outcome
counts for an item only if it answered the body the item has now (new settings, new bodies, new answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb
import polars as pl

from batch_assets.batching.protocol import Outcome
from batch_assets.sources import month_start
from batch_assets.warehouse.schema import table_exists
from batch_assets.warehouse.writes import ArrowStream, replace_partition

# batch_requests.source
SUBMITTED = "submitted"  # written to a request file of the plan
REUSED = "reused"  # an earlier attempt of this month already answered this exact body
CACHE = "cache"  # an identical request was answered before (another month or pipeline): its answer is reused
# batch_outcomes.source
BATCH_SOURCE = "batch"

PLAN_ITEM_COLUMNS = ("plan_id", "attempt", "item_id", "custom_id", "body_sha256", "file_sha256", "input_tokens",
                     "source")
ITEM_STATUS_SCHEMA = pl.Schema({
    "item_id": pl.String,
    "tries": pl.Int64,  # times this body was put in a request file for this item
    "last_plan_id": pl.Int64,  # the latest plan that submitted it
    "outcome": pl.String,  # its best outcome so far (a success wins), null if none came back yet
    "status_code": pl.Int32,
    "error_code": pl.String,
    "outcome_plan_id": pl.Int64,
    "attempt": pl.Int32,
    "batch_id": pl.String,
    "custom_id": pl.String,
})


def succeeded_bodies(con: duckdb.DuckDBPyConnection, pipeline: str, month: date) -> set[tuple[str, str]]:
    """(item_id, body_sha256) pairs that already have a successful answer this month."""
    if not table_exists(con, "batch_outcomes"):
        return set()
    rows = con.execute(
        "SELECT DISTINCT item_id, body_sha256 FROM batch_outcomes WHERE pipeline = $p AND month = $m "
        "AND outcome = 'succeeded' AND body_sha256 IS NOT NULL AND item_id IS NOT NULL",
        {"p": pipeline, "m": month_start(month)}).fetchall()
    return {(item_id, body) for item_id, body in rows}


def write_plan_items(con: duckdb.DuckDBPyConnection, pipeline: str, month: date, plan_id: int,
                     items: pl.DataFrame) -> int:
    """Records a plan's items (columns of `batch_requests` but pipeline/month); replaces that plan's rows."""
    return replace_partition(con, "batch_requests", month, items.with_columns(pl.lit(plan_id, pl.Int64)
                                                                              .alias("plan_id")),
                             pipeline=pipeline, within={"plan_id": [plan_id]})


def plan_items(con: duckdb.DuckDBPyConnection, pipeline: str, month: date, plan_ids: Sequence[int], *,
               file_sha256s: Sequence[str] | None = None, columns: Sequence[str] = PLAN_ITEM_COLUMNS
               ) -> pl.DataFrame:
    """The `batch_requests` rows of some plans (of some request files of theirs, if given), with `columns`."""
    unknown = [c for c in columns if c not in PLAN_ITEM_COLUMNS]
    if unknown:
        raise ValueError(f"batch_requests has no column {unknown[0]!r} here: pick from {PLAN_ITEM_COLUMNS}")
    sql = (f"SELECT {', '.join(columns)} "
           "FROM batch_requests WHERE pipeline = $p AND month = $m AND list_contains($plans, plan_id)")
    params: dict[str, object] = {"p": pipeline, "m": month_start(month), "plans": list(plan_ids)}
    if file_sha256s is not None:
        sql += " AND list_contains($files, file_sha256)"
        params["files"] = list(file_sha256s)
    return pl.DataFrame(con.sql(sql, params=params))


def item_status(con: duckdb.DuckDBPyConnection, pipeline: str, month: date, root_plan_id: int,
                ignored_plan_ids: Sequence[int] = ()) -> pl.DataFrame:
    """Where each item of the month's current plan stands (``ITEM_STATUS_SCHEMA``), one row per item.

    The month's items are the root plan's (the latest plan a user asked for); their best outcome is the one
    that answered the body they have now, a success before anything else, then the latest attempt. Plans in
    `ignored_plan_ids` (replaced before anything of them was submitted) count as no try.
    """
    if not table_exists(con, "batch_outcomes"):
        return ITEM_STATUS_SCHEMA.to_frame()
    # One pass: the month's request rows and outcome rows together, grouped by item and body (each body by its
    # 64-bit hash of its sha256: short keys; two bodies of one item would have to collide in 64 bits to be
    # confused), keeping the groups that hold the root plan's row. A group's tries are its submitted rows, its best
    # outcome the one with the highest number (a success, then the latest plan, then the row written last), fetched
    # by its rowid. A million items in ~0.4 s, where joining the root's items to requests and to outcomes apart took
    # ~0.65 s. Rows one statement writes have no order (outcome rows load in parallel); two of them tie only when
    # one request file went out twice in a plan, and either is that attempt's outcome for the item (the same
    # custom_id, plan and attempt, which `mark_final` keys on).
    sql = """
        WITH keyed AS (
            SELECT item_id, hash(body_sha256) AS body, plan_id, plan_id = $root AS in_root,
                   source = 'submitted' AND NOT list_contains($ignored, plan_id) AS tried, NULL::HUGEINT AS rank
            FROM batch_requests WHERE pipeline = $p AND month = $m
            UNION ALL
            SELECT item_id, hash(body_sha256), plan_id, false, false,
                   ((outcome = 'succeeded')::HUGEINT << 96) + (plan_id::HUGEINT << 64) + rowid
            FROM batch_outcomes WHERE pipeline = $p AND month = $m
        ),
        items AS (
            SELECT item_id, count(*) FILTER (WHERE tried) AS tries, max(plan_id) FILTER (WHERE tried) AS last_plan_id,
                   max(rank) AS rank
            FROM keyed GROUP BY item_id, body HAVING bool_or(in_root)
        )
        SELECT i.item_id, i.tries, i.last_plan_id, o.outcome, o.status_code, o.error_code,
               o.plan_id AS outcome_plan_id, o.attempt, o.batch_id, o.custom_id
        FROM items i LEFT JOIN batch_outcomes o ON o.rowid = (i.rank & 18446744073709551615::HUGEINT)::BIGINT
    """
    frame = pl.DataFrame(con.sql(sql, params={"p": pipeline, "m": month_start(month), "root": root_plan_id,
                                              "ignored": [int(i) for i in ignored_plan_ids]}))
    return frame.cast(ITEM_STATUS_SCHEMA) if frame.height else ITEM_STATUS_SCHEMA.to_frame()


def mark_final(con: duckdb.DuckDBPyConnection, pipeline: str, month: date, final: pl.DataFrame) -> None:
    """Sets `batch_outcomes.final`: true on the rows in `final` (columns custom_id, outcome_plan_id), false on
    every other row of the month."""
    name = "_batch_assets_final"
    con.register(name, ArrowStream(final.select("custom_id", "outcome_plan_id")))
    params = {"p": pipeline, "m": month_start(month)}
    try:
        con.begin()
        con.execute("UPDATE batch_outcomes SET final = false WHERE pipeline = $p AND month = $m", params)
        con.execute(f"UPDATE batch_outcomes o SET final = true FROM {name} f WHERE o.pipeline = $p "
                    "AND o.month = $m AND o.custom_id = f.custom_id AND o.plan_id = f.outcome_plan_id", params)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.unregister(name)


SUCCESS_SCHEMA = pl.Schema({"item_id": pl.String, "batch_id": pl.String, "custom_id": pl.String,
                           "attempt": pl.Int32})


def final_successes(con: duckdb.DuckDBPyConnection, pipeline: str, month: date) -> pl.DataFrame:
    """The items whose final outcome (as `mark_final` left it) is a success, one row each (``SUCCESS_SCHEMA``):
    where their answers are."""
    if not table_exists(con, "batch_outcomes"):
        return SUCCESS_SCHEMA.to_frame()
    # One row per item even if two rows of it were marked (one request file submitted twice, say).
    frame = pl.DataFrame(con.sql(
        "SELECT item_id, min({'batch_id': batch_id, 'custom_id': custom_id, 'attempt': attempt}) AS answer "
        "FROM batch_outcomes "
        "WHERE pipeline = $p AND month = $m AND final AND outcome = 'succeeded' GROUP BY item_id",
        params={"p": pipeline, "m": month_start(month)}))
    if not frame.height:
        return SUCCESS_SCHEMA.to_frame()
    return frame.select("item_id", pl.col("answer").struct.field("batch_id"),
                        pl.col("answer").struct.field("custom_id"),
                        pl.col("answer").struct.field("attempt")).cast(SUCCESS_SCHEMA)


CACHED_ANSWER_SCHEMA = pl.Schema({
    "body_sha256": pl.String,
    "batch_id": pl.String,  # the batch that answered it (its results Parquet holds the payload)
    "custom_id": pl.String,  # the answer's custom_id in that batch
    "requested_model": pl.String,
    "response_model": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cached_tokens": pl.Int64,
})


def cached_answers(con: duckdb.DuckDBPyConnection, body_sha256s: pl.Series) -> pl.DataFrame:
    """For each body hash that a batch already answered successfully (any pipeline, month or run), one such
    answer (the latest); ``CACHED_ANSWER_SCHEMA``."""
    if body_sha256s.is_empty() or not table_exists(con, "batch_outcomes") or not con.execute(
            "SELECT EXISTS (SELECT 1 FROM batch_outcomes WHERE outcome = 'succeeded' AND source = 'batch')"
    ).fetchall()[0][0]:
        return CACHED_ANSWER_SCHEMA.to_frame()
    name = "_batch_assets_cache_lookup"
    # The hashes as they are (a semi join does not care about repeats): a month's unique copy was ~80 MB a million.
    con.register(name, ArrowStream(body_sha256s.rename("body_sha256").to_frame()))
    try:
        frame = pl.DataFrame(con.sql(f"""
            SELECT o.body_sha256, o.batch_id, o.custom_id, o.requested_model, o.response_model, o.prompt_tokens,
                   o.completion_tokens, o.cached_tokens
            FROM batch_outcomes o SEMI JOIN {name} w ON o.body_sha256 = w.body_sha256
            WHERE o.outcome = 'succeeded' AND o.source = 'batch' AND o.batch_id IS NOT NULL
            QUALIFY row_number() OVER (PARTITION BY o.body_sha256 ORDER BY o.month DESC, o.plan_id DESC) = 1
        """))
    finally:
        con.unregister(name)
    return frame.cast(CACHED_ANSWER_SCHEMA) if frame.height else CACHED_ANSWER_SCHEMA.to_frame()


def write_cache_outcomes(con: duckdb.DuckDBPyConnection, pipeline: str, month: date, plan_id: int, attempt: int,
                         requested_model: str, hits: pl.DataFrame) -> int:
    """Outcome rows for items answered from the cache: `succeeded`, pointing at the earlier answer (its batch and
    custom_id, where its payload is), billed nothing now."""
    rows = hits.select(
        "custom_id", "item_id", pl.lit(attempt, pl.Int32).alias("attempt"), "batch_id",
        pl.lit(Outcome.SUCCEEDED.value).alias("outcome"), pl.lit(200, pl.Int32).alias("status_code"),
        pl.lit(None, pl.String).alias("error_code"), pl.lit(None, pl.String).alias("error_message"),
        "response_model", pl.lit(0, pl.Int64).alias("prompt_tokens"),
        pl.lit(0, pl.Int64).alias("completion_tokens"), pl.lit(0, pl.Int64).alias("cached_tokens"),
        pl.lit(0, pl.Int64).alias("reasoning_tokens"), pl.lit(plan_id, pl.Int64).alias("plan_id"), "body_sha256",
        pl.lit(False).alias("final"), pl.lit(requested_model).alias("requested_model"),
        pl.lit(CACHE).alias("source"))
    return replace_partition(con, "batch_outcomes", month, rows, pipeline=pipeline,
                             within={"plan_id": [plan_id], "source": [CACHE]})

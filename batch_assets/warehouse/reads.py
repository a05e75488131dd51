"""Reads from the warehouse as polars frames: whole tables or a month, nearest documents, label accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import duckdb
import polars as pl

from batch_assets.sources import month_start
from batch_assets.warehouse.schema import (
    EMBEDDINGS_TABLE,
    PIPELINE_TABLES,
    WarehouseError,
    embedding_dims,
    polars_schema,
    quote,
    table_columns,
    table_exists,
    table_key,
)

DOCUMENT_COLUMNS = ("id", "text", "created_at", "label", "month")


def read_table(
    con: duckdb.DuckDBPyConnection,
    table: str,
    month: str | date | None = None,
    *,
    pipeline: str | None = None,
    columns: Sequence[str] | None = None,
) -> pl.DataFrame:
    """A table's rows (one month's with `month`, one pipeline's with `pipeline`), in key order.

    `columns` reads only those of them the table has (e.g. a month's ids without its texts). A table that does
    not exist yet reads as an empty frame with its columns.
    """
    wanted = columns
    found = {name: kind for name, kind in table_columns(con, table).items() if wanted is None or name in wanted}
    if pipeline is not None and table not in PIPELINE_TABLES:
        raise WarehouseError(f"{table} has no pipeline column: leave pipeline=None")
    if not table_exists(con, table):
        return pl.DataFrame(schema=polars_schema(found))
    where: list[str] = []
    params: dict[str, object] = {}
    if month is not None:
        where.append("month = $month")
        params["month"] = month_start(month)
    if pipeline is not None:
        where.append("pipeline = $pipeline")
        params["pipeline"] = pipeline
    sql = (
        f"SELECT {', '.join(quote(c) for c in found)} FROM {quote(table)}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {', '.join(quote(c) for c in table_key(con, table))}"
    )
    return pl.DataFrame(con.sql(sql, params=params or None))


def read_documents(con: duckdb.DuckDBPyConnection, month: str | date) -> pl.DataFrame:
    """A month of raw_documents as the sources produce them: id, text, created_at, label, month."""
    return read_table(con, "raw_documents", month).select(DOCUMENT_COLUMNS)


def nearest_documents(
    con: duckdb.DuckDBPyConnection,
    query_vector: Sequence[float],
    *,
    month: str | date | None = None,
    k: int = 5,
    model: str | None = None,
) -> pl.DataFrame:
    """The k embedded documents most similar to a query vector: document_id, month, text, score (cosine),
    best first. Restrict to one month and/or one embedding model if given."""
    if k < 1:
        raise WarehouseError(f"k must be at least 1; got {k}")
    dims = embedding_dims(con)
    where: list[str] = []
    params: dict[str, object] = {}
    if month is not None:
        where.append("e.month = $month")
        params["month"] = month_start(month)
    if model is not None:
        where.append("e.model = $model")
        params["model"] = model
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    present = 0
    if dims is not None:
        present = con.execute(
            f"SELECT count(*) FROM {EMBEDDINGS_TABLE} e{condition}", params or None
        ).fetchall()[0][0]
    if not present:
        scope = "".join(
            [f" for {params['month']:%Y-%m}" if month is not None else "", f" from {model}" if model else ""]
        )
        raise WarehouseError(
            f"no embeddings{scope} yet: materialize the embeddings pipeline for a month first"
        )
    vector = [float(x) for x in query_vector]
    if len(vector) != dims:
        raise WarehouseError(
            f"the query vector has {len(vector)} dims but {EMBEDDINGS_TABLE} holds FLOAT[{dims}] vectors: "
            "embed the query with the same model and dimensions as the documents"
        )
    if not any(vector):
        raise WarehouseError("the query vector is all zeros: cosine similarity is undefined for it")
    text = "d.text" if table_exists(con, "raw_documents") else "CAST(NULL AS VARCHAR)"
    join = (
        " LEFT JOIN raw_documents d ON d.month = e.month AND d.id = e.document_id" if text == "d.text" else ""
    )
    sql = (
        f"SELECT e.document_id, e.month, {text} AS text, "
        f"CAST(array_cosine_similarity(e.embedding, CAST($query AS FLOAT[{dims}])) AS DOUBLE) AS score "
        f"FROM {EMBEDDINGS_TABLE} e{join}{condition} "
        f"ORDER BY score DESC NULLS LAST, e.document_id LIMIT {int(k)}"
    )
    return pl.DataFrame(con.sql(sql, params={**params, "query": vector}))


def label_accuracy(
    con: duckdb.DuckDBPyConnection, month: str | date, *, model: str | None = None
) -> tuple[float | None, pl.DataFrame, int]:
    """How often the sentiment labels of a month match the gold labels.

    Returns (accuracy, confusion, n_labelled): n_labelled counts the labelled documents that have a gold
    label; accuracy is the share of them whose label equals the gold label (a missing or unparseable label
    counts as wrong), None when there are none; confusion has one row per (gold_label, label) pair with its
    count.
    """
    labels = read_table(con, "document_labels", month)
    if model is not None:
        labels = labels.filter(pl.col("model") == model)
    scored = labels.filter(pl.col("gold_label").is_not_null())
    confusion = (
        scored.group_by("gold_label", "label")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort("gold_label", "label", nulls_last=True)
    )
    if scored.height == 0:
        return None, confusion, 0
    correct = scored.filter(pl.col("label") == pl.col("gold_label")).height
    return correct / scored.height, confusion, scored.height

"""`batch-assets search`: the documents nearest to a text, by cosine similarity over document_embeddings."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import polars as pl
from openai import omit

from batch_assets import warehouse
from batch_assets.provider import make_openai_client
from batch_assets.settings import PlatformSettings
from batch_assets.sources import month_start


def _embedding_model(con: duckdb.DuckDBPyConnection, month: str | None) -> tuple[str, int]:
    """The model and dims the documents were embedded with (the most used one if several)."""
    rows = warehouse.read_table(con, "document_embeddings", month_start(month) if month else None)
    if rows.is_empty():
        scope = f" for {month}" if month else ""
        raise warehouse.WarehouseError(f"no embeddings{scope} yet: materialize the embeddings pipeline for a month "
                                       "first (job embeddings_submit, then the batch sensor collects it)")
    top = rows.group_by("model", "dims").len().sort("len", descending=True).row(0)
    return str(top[0]), int(top[1])


def search(text: str, *, month: str | None = None, k: int = 5, duckdb_path: str | Path | None = None
           ) -> pl.DataFrame:
    """Embeds `text` through the configured provider with the documents' model and ranks the documents."""
    settings = PlatformSettings.from_env()
    path = Path(duckdb_path) if duckdb_path else settings.duckdb_path
    if not path.exists():
        raise warehouse.WarehouseError(f"no warehouse at {path}: materialize a month first (README, 'First run')")
    con = warehouse.connect(path, read_only=True)
    try:
        model, dims = _embedding_model(con, month)
        # Local answers name the model they ran ("local/..."); any name reaches the same local model.
        dimensions = dims if model.startswith(("local/", "text-embedding-3")) else omit
        response = make_openai_client(settings.provider).embeddings.create(model=model, input=text,
                                                                           dimensions=dimensions)
        return warehouse.nearest_documents(con, response.data[0].embedding, month=month, k=k, model=model)
    finally:
        con.close()


def run_search(text: str, *, month: str | None, k: int, duckdb_path: str | None) -> int:
    try:
        hits = search(text, month=month, k=k, duckdb_path=duckdb_path)
    except (warehouse.WarehouseError, ValueError) as exc:
        print(f"batch-assets search: {exc}", file=sys.stderr)
        return 1
    for rank, row in enumerate(hits.iter_rows(named=True), start=1):
        snippet = (row["text"] or "").replace("\n", " ")
        print(f"{rank}. {row['score']:.3f}  {row['document_id']}  {row['month']:%Y-%m}  {snippet[:100]}")
    return 0

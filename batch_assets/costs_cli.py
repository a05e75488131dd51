"""`batch-assets costs [--month YYYY-MM]`: what the batches cost, per month, pipeline and model, from DuckDB."""

from __future__ import annotations

import argparse
import sys

import duckdb
import polars as pl

from batch_assets import warehouse
from batch_assets.batching.money import format_usd
from batch_assets.settings import PlatformSettings
from batch_assets.sources import month_start


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    costs = commands.add_parser("costs", help="spend per month, pipeline and model (batch $, standard $, saved)")
    costs.add_argument("--month", default=None, help="only this month, e.g. 2024-03")
    costs.add_argument("--duckdb", default=None, help="warehouse path (default: BATCH_ASSETS_DUCKDB_PATH)")
    costs.set_defaults(run=_costs)


def spend(con: duckdb.DuckDBPyConnection, month: str | None = None) -> pl.DataFrame:
    """Rows of month, pipeline, model, requests, tokens, batch / standard / saved dollars, and cache savings."""
    costs = warehouse.read_table(con, "batch_costs", month_start(month) if month else None)
    return (costs.group_by("month", "pipeline", "model")
            .agg(pl.col("requests").sum(), pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum(),
                 pl.col("cached_tokens").sum(), pl.col("batch_usd").sum(), pl.col("standard_usd").sum(),
                 pl.col("saving_usd").sum(), pl.col("batch_usd").null_count().alias("unpriced"))
            .sort("month", "pipeline", "model"))


def _costs(args: argparse.Namespace) -> int:
    settings = PlatformSettings.from_env()
    path = args.duckdb or settings.duckdb_path
    try:
        con = warehouse.connect(path, read_only=True)
    except warehouse.WarehouseError as exc:
        print(f"batch-assets costs: {exc}", file=sys.stderr)
        return 1
    try:
        rows = spend(con, args.month)
    finally:
        con.close()
    if rows.is_empty():
        print("no batch has been collected" + (f" for {args.month}" if args.month else "") + " yet")
        return 0
    header = (f"{'month':<8} {'pipeline':<12} {'model':<30} {'requests':>9} {'batch $':>11} {'standard $':>11} "
              f"{'saved':>11}")
    print(header)
    print("-" * len(header))
    for row in rows.iter_rows(named=True):
        print(f"{row['month']:%Y-%m}  {row['pipeline']:<12} {row['model']:<30} {row['requests']:>9,} "
              f"{format_usd(row['batch_usd']):>11} {format_usd(row['standard_usd']):>11} "
              f"{format_usd(row['saving_usd']):>11}" + ("  (some usage unpriced)" if row["unpriced"] else ""))
    print("-" * len(header))
    print(f"{'total':<52} {int(rows['requests'].sum()):>9,} {format_usd(rows['batch_usd'].sum()):>11} "
          f"{format_usd(rows['standard_usd'].sum()):>11} {format_usd(rows['saving_usd'].sum()):>11}")
    return 0

"""Company metrics per month: generated for fictional companies, or read from a user's file."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl

from batch_assets.sources.months import SourceError, month_index, month_start, unit_interval

DEFAULT_COMPANIES = (
    "Acme Analytics",
    "Borealis Foods",
    "Cobalt Logistics",
    "Driftwood Health",
    "Evergreen Energy",
)

METRICS_SCHEMA = pl.Schema({
    "month": pl.Date(),
    "company": pl.String(),
    "revenue_usd": pl.Float64(),
    "revenue_growth_pct": pl.Float64(),
    "gross_margin_pct": pl.Float64(),
    "active_customers": pl.Int64(),
    "churn_pct": pl.Float64(),
    "support_tickets": pl.Int64(),
    "nps": pl.Int64(),
})


def _company_revenue(company: str, seed: int, index: int) -> float:
    """Monthly revenue: a compound trend, yearly seasonality and a little noise; any month on its own."""
    key = f"{seed}:{company}"
    base = 1_000_000 + 19_000_000 * unit_interval("base:" + key)
    yearly_growth = -0.05 + 0.45 * unit_interval("growth:" + key)
    season = 0.02 + 0.08 * unit_interval("season:" + key)
    phase = 12 * unit_interval("phase:" + key)
    noise = 0.03 * (unit_interval(f"rev:{key}:{index}") - 0.5)
    years = (index - month_index(date(2024, 1, 1))) / 12
    return (
        base
        * (1 + yearly_growth) ** years
        * (1 + season * math.sin(2 * math.pi * (index + phase) / 12) + noise)
    )


def _company_row(company: str, seed: int, month: date) -> dict[str, object]:
    key, index = f"{seed}:{company}", month_index(month)
    revenue = _company_revenue(company, seed, index)
    previous = _company_revenue(company, seed, index - 1)
    incident = unit_interval(f"incident:{key}:{index}") < 0.08  # an occasional bad month makes reports worth reading

    def wobble(name: str, width: float) -> float:
        return width * (unit_interval(f"{name}:{key}:{index}") - 0.5)

    arpc = (150 + 1_850 * unit_interval("arpc:" + key)) * (1 + 0.002 * (index - month_index(date(2024, 1, 1))))
    customers = round(revenue / arpc)
    churn = max(0.2, 0.8 + 3.2 * unit_interval("churn:" + key) + wobble("churn", 0.6) + (1.5 if incident else 0.0))
    tickets = customers * (0.02 + 0.08 * unit_interval("tickets:" + key)) * (1 + wobble("tickets", 0.2))
    nps = 10 + 50 * unit_interval("nps:" + key) + wobble("nps", 8) - (15 if incident else 0)
    return {
        "month": month,
        "company": company,
        "revenue_usd": round(revenue, 2),
        "revenue_growth_pct": round(100 * (revenue / previous - 1), 2),
        "gross_margin_pct": round(35 + 45 * unit_interval("margin:" + key) + wobble("margin", 2.0), 2),
        "active_customers": customers,
        "churn_pct": round(churn, 2),
        "support_tickets": round(tickets * (2.2 if incident else 1.0)),
        "nps": int(max(-100, min(100, round(nps)))),
    }


def _month_expr(dtype: pl.DataType) -> pl.Expr:
    col = pl.col("month")
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return col.cast(pl.Date).dt.truncate("1mo")
    text = col.cast(pl.String).str.strip_chars()
    return pl.coalesce(
        text.str.to_date("%Y-%m-%d", strict=False), (text + "-01").str.to_date("%Y-%m-%d", strict=False)
    ).dt.truncate("1mo")


def _metrics_from_file(path: Path, month: date) -> pl.DataFrame:
    if not path.is_file():
        raise SourceError(f"company metrics file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise SourceError(f"company metrics must be a .csv or .parquet file; got {path.name}")
    lazy = pl.scan_csv(path) if suffix == ".csv" else pl.scan_parquet(path)
    schema = lazy.collect_schema()
    missing = [c for c in METRICS_SCHEMA if c not in schema]
    if missing:
        raise SourceError(
            f"company metrics need columns {', '.join(METRICS_SCHEMA)}; {path} lacks {', '.join(missing)}; "
            f"found: {', '.join(schema.names())}"
        )
    rows = (
        lazy.select(
            _month_expr(schema["month"]).alias("month"),
            pl.col("month").cast(pl.String).alias("_raw_month"),
            *(pl.col(c) for c in METRICS_SCHEMA if c != "month"),
        )
        .filter((pl.col("month") == month) | pl.col("month").is_null())
        .collect()
    )
    bad = rows.filter(pl.col("month").is_null())
    if bad.height:
        raise SourceError(
            f"{bad.height} rows of {path} have a month that is not a date (e.g. {bad['_raw_month'][0]!r}): "
            "write months as 2024-03 or 2024-03-01"
        )
    try:
        frame = rows.drop("_raw_month").cast(METRICS_SCHEMA)
    except pl.exceptions.PolarsError as error:
        raise SourceError(f"company metrics in {path} have a value of the wrong type: {error}") from error
    dupes = frame.group_by("company").len().filter(pl.col("len") > 1)["company"].to_list()
    if dupes:
        raise SourceError(
            f"{path} has several rows for {month:%Y-%m} and company {', '.join(sorted(dupes)[:5])}"
        )
    return frame.sort("company")


def company_metrics_for_month(
    month: str | date, *, companies: Sequence[str] = DEFAULT_COMPANIES, seed: int = 7, path: str | None = None
) -> pl.DataFrame:
    """One row per company for a month: month, company, revenue_usd, revenue_growth_pct, gross_margin_pct,
    active_customers, churn_pct, support_tickets, nps.

    Without `path` the numbers are generated: deterministic for (company, seed, month), smooth from month to
    month (revenue_growth_pct is computed against the generated previous month), with an occasional bad month.
    With `path` (CSV or Parquet holding the same columns) the file's rows for the month are returned; a month
    the file does not cover gives an empty frame.
    """
    month = month_start(month)
    if path is not None:
        return _metrics_from_file(Path(path).expanduser(), month)
    rows = [_company_row(company, seed, month) for company in companies]
    return pl.DataFrame(rows, schema=METRICS_SCHEMA)

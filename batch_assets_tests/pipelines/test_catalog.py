"""The reports pipeline's prompts, built column by column, are the prompts built one row at a time."""

from __future__ import annotations

from datetime import date

import polars as pl

from batch_assets.pipelines.catalog import metrics_prompt, metrics_prompts


def test_metrics_prompts_are_the_prompts_of_each_row() -> None:
    rows = pl.DataFrame({
        "month": [date(2024, 3, 1), date(2024, 3, 1), date(2024, 4, 1)],
        "company": ["Acme", None, "Émile & Fils"],
        "revenue_usd": [1234567.891, None, 0.005],
        "revenue_growth_pct": [-1.25, 3.0, None],
        "active_customers": [90_000, None, 0],
        "churn_pct": [True, False, None],  # neither float nor int: written as Python writes it
        "nps": pl.Series([1.5, None, -2.0], dtype=pl.Float32),
    })  # gross_margin_pct and support_tickets are missing: "None"
    assert metrics_prompts(rows).to_list() == [metrics_prompt(row) for row in rows.iter_rows(named=True)]

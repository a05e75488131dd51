"""The reports pipeline's prompts, built column by column a chunk at a time, are the prompts built one row at a
time."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from batch_assets.batching import prepare
from batch_assets.pipelines.catalog import REPORTS, metrics_prompt, metrics_prompts
from batch_assets.pipelines.plan import item_frame


def _rows() -> pl.DataFrame:
    return pl.DataFrame({
        "month": [date(2024, 3, 1), date(2024, 3, 1), date(2024, 4, 1)],
        "company": ["Acme", None, "Émile & Fils"],
        "revenue_usd": [1234567.891, None, 0.005],
        "revenue_growth_pct": [-1.25, 3.0, None],
        "active_customers": [90_000, None, 0],
        "churn_pct": [True, False, None],  # neither float nor int: written as Python writes it
        "nps": pl.Series([1.5, None, -2.0], dtype=pl.Float32),
    })  # gross_margin_pct and support_tickets are missing: "None"


def test_metrics_prompts_are_the_prompts_of_each_row() -> None:
    rows = _rows()
    assert metrics_prompts(rows).to_list() == [metrics_prompt(row) for row in rows.iter_rows(named=True)]


def test_report_requests_make_their_prompts_chunk_by_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare, "_PREPARE_CHUNK", 2)  # three rows in two chunks
    rows = item_frame(REPORTS, _rows().with_columns(pl.Series("company", ["Acme", "Bolt", "Émile & Fils"])))
    requests = list(REPORTS.build_requests(rows, REPORTS.defaults))
    assert [r.body["messages"][-1]["content"] for r in requests] == [
        metrics_prompt(row) for row in rows.iter_rows(named=True)]
    assert [r.item_id for r in requests] == ["Acme", "Bolt", "Émile & Fils"]

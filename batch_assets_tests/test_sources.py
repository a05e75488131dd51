"""Documents (Rotten Tomatoes and a user's files) and company metrics, as a pipeline would read them."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from batch_assets import sources
from batch_assets.sources import (
    DEFAULT_COMPANIES,
    DOCUMENT_SCHEMA,
    METRICS_SCHEMA,
    DocumentSource,
    SourceError,
    company_metrics_for_month,
    load_documents,
    month_start,
    rotten_tomatoes_documents,
)

MONTHS_2024 = [date(2024, m, 1) for m in range(1, 13)]


def documents_for_month(month: str | date, **options: Any) -> pl.DataFrame:
    return load_documents(month, **options).frame


# ------------------------------------------------------------------------------------------------ months


@pytest.mark.parametrize(
    "value",
    ["2024-03", "2024-03-01", " 2024-03-17 ", date(2024, 3, 9), datetime(2024, 3, 31, 23, 59)],
)
def test_month_start_accepts_months_dates_and_datetimes(value: object) -> None:
    assert month_start(value) == date(2024, 3, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["March 2024", "2024/03", "2024-13", "", 202403, None])
def test_month_start_says_what_a_month_looks_like(value: object) -> None:
    with pytest.raises(SourceError, match="2024-03"):
        month_start(value)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ Rotten Tomatoes


def test_rotten_tomatoes_corpus_loads_with_gold_labels() -> None:
    docs = rotten_tomatoes_documents()
    assert docs.schema == pl.Schema(DOCUMENT_SCHEMA)
    assert docs.height == 13_905 - 14  # the 14 rows without text are dropped
    counts = dict(docs.group_by("label").len().iter_rows())
    assert counts == {"positive": 7403, "negative": 5405, "neutral": 1083}
    assert docs["id"].n_unique() == docs.height
    assert docs["id"].str.starts_with("rt-").all()
    assert (docs["text"].str.strip_chars() != "").all()


def test_rotten_tomatoes_months_are_deterministic_and_cover_the_range() -> None:
    docs = rotten_tomatoes_documents()
    sources.documents._rt_raw.cache_clear()
    rotten_tomatoes_documents.cache_clear()
    again = rotten_tomatoes_documents()
    assert docs.equals(again)
    per_month = dict(docs.group_by("month").len().iter_rows())
    assert sorted(per_month) == MONTHS_2024
    assert min(per_month.values()) > 900  # ~1,150 a month
    assert (docs["created_at"].dt.truncate("1mo").cast(pl.Date) == docs["month"]).all()
    # a known review keeps its id and month
    assert docs.filter(pl.col("id") == "rt-0")["text"][0].startswith("Vijay Singh Rajput")


def test_a_month_of_documents_with_a_limit_is_a_stable_mixed_subset() -> None:
    full = load_documents("2024-03").frame
    assert full.height > 900 and (full["month"] == date(2024, 3, 1)).all()
    first = load_documents("2024-03", limit_per_month=30).frame
    assert first.equals(load_documents(date(2024, 3, 1), limit_per_month=30).frame)
    assert first.height == 30
    assert set(first["id"]) <= set(full["id"])
    assert set(first["label"]) == {"positive", "negative", "neutral"}
    assert first["label"].value_counts()["count"].max() == 10  # interleaved: 10 of each
    assert set(load_documents("2024-03", limit_per_month=10).frame["id"]) <= set(first["id"])
    assert first["created_at"].is_sorted()


def test_months_outside_the_range_have_no_documents() -> None:
    empty = documents_for_month("2023-12")
    assert empty.height == 0 and empty.schema == pl.Schema(DOCUMENT_SCHEMA)


def test_the_corpus_can_be_spread_over_other_months() -> None:
    source = DocumentSource(first_month="2023-01", last_month="2023-03")
    counts = [documents_for_month(f"2023-0{m}", source=source).height for m in (1, 2, 3)]
    assert sum(counts) == 13_891 and min(counts) > 4000
    with pytest.raises(SourceError, match="before"):
        documents_for_month("2023-01", source=DocumentSource(first_month="2023-05", last_month="2023-01"))


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(SourceError, match="limit_per_month"):
        documents_for_month("2024-03", limit_per_month=-1)


# ------------------------------------------------------------------------------------------ user documents

ROWS = [
    {"id": "a1", "text": "Great product", "created_at": "2024-03-05", "label": "positive"},
    {"id": "a2", "text": "Terrible support", "created_at": "2024-03-31T23:59:59", "label": "negative"},
    {"id": "a3", "text": "It arrived", "created_at": "2024-04-01T00:00:00", "label": "neutral"},
    {"id": "a4", "text": "Late but fine", "created_at": "2024-03-10T12:00:00Z", "label": None},
    {"id": "a5", "text": "   ", "created_at": "2024-03-11 08:00:00", "label": "neutral"},
]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    frame = pl.DataFrame(rows)
    if path.suffix == ".csv":
        frame.write_csv(path)
    elif path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", ["docs.csv", "docs.parquet", "docs.jsonl", "docs.ndjson"])
def test_user_documents_from_one_file(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, ROWS)
    loaded = load_documents("2024-03", source=DocumentSource(path=str(path)))
    frame = loaded.frame
    assert frame.schema == pl.Schema(DOCUMENT_SCHEMA)
    assert frame["id"].to_list() == ["a1", "a4", "a2"]  # by created_at; a3 is April, a5 has no text
    assert frame["created_at"].to_list() == [
        datetime(2024, 3, 5),
        datetime(2024, 3, 10, 12),
        datetime(2024, 3, 31, 23, 59, 59),
    ]
    assert frame["label"].to_list() == ["positive", None, "negative"]
    assert loaded.dropped_empty_texts == 1
    assert any("empty text" in w for w in loaded.warnings)
    assert documents_for_month("2024-04", source=DocumentSource(path=str(path)))["id"].to_list() == ["a3"]


def test_user_documents_from_a_folder_of_mixed_files_without_labels(tmp_path: Path) -> None:
    no_label = [{k: v for k, v in r.items() if k != "label"} for r in ROWS]
    _write(tmp_path / "one.csv", no_label[:2])
    (tmp_path / "nested").mkdir()
    _write(tmp_path / "nested" / "two.parquet", no_label[2:4])
    (tmp_path / "notes.txt").write_text("ignored")
    frame = documents_for_month("2024-03", source=DocumentSource(path=str(tmp_path)))
    assert sorted(frame["id"]) == ["a1", "a2", "a4"]
    assert frame["label"].null_count() == 3


def test_user_documents_with_native_timestamps_and_integer_ids(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "id": [1, 2],
            "text": ["x", "y"],
            "created_at": [datetime(2024, 3, 1), datetime(2024, 3, 2)],
        }
    ).with_columns(pl.col("created_at").dt.replace_time_zone("Europe/Paris"))
    frame.write_parquet(tmp_path / "d.parquet")
    docs = documents_for_month("2024-03", source=DocumentSource(path=str(tmp_path / "d.parquet")))
    assert docs["id"].to_list() == ["2"]  # 2024-03-01 00:00 Paris is still February in UTC
    assert docs["created_at"][0] == datetime(2024, 3, 1, 23)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", [{"doc": "a", "body": "b", "created_at": "2024-03-01"}])
    with pytest.raises(SourceError, match=r"need columns id, text, created_at.*found: doc, body, created_at"):
        documents_for_month("2024-03", source=DocumentSource(path=str(path)))


def test_an_empty_folder_or_missing_path_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no document files in .*\.csv, \.parquet, \.jsonl or \.ndjson"):
        documents_for_month("2024-03", source=DocumentSource(path=str(tmp_path)))
    with pytest.raises(SourceError, match="does not exist"):
        documents_for_month("2024-03", source=DocumentSource(path=str(tmp_path / "nope")))
    with pytest.raises(SourceError, match="is not a"):
        documents_for_month("2024-03", source=DocumentSource(path=str(_write(tmp_path / "d.txt", ROWS))))


def test_unparseable_created_at_is_reported_with_examples(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", [*ROWS, {"id": "z", "text": "t", "created_at": "last tuesday"}])
    with pytest.raises(SourceError, match=r"1 documents .*created_at.*'last tuesday'.*ISO 8601"):
        documents_for_month("2024-03", source=DocumentSource(path=str(path)))


def test_duplicate_ids_within_a_month_are_listed(tmp_path: Path) -> None:
    rows = [*ROWS, {"id": "a1", "text": "again", "created_at": "2024-03-20", "label": None}]
    path = _write(tmp_path / "d.jsonl", rows)
    with pytest.raises(SourceError, match=r"1 document ids appear more than once .*2024-03 \(e\.g\. a1\)"):
        documents_for_month("2024-03", source=DocumentSource(path=str(path)))
    # the same id in another month is another document
    assert documents_for_month("2024-04", source=DocumentSource(path=str(path))).height == 1


def test_unknown_gold_labels_are_warned_about(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", [{"id": "a", "text": "t", "created_at": "2024-03-02", "label": "meh"}])
    warnings = load_documents("2024-03", source=DocumentSource(path=str(path))).warnings
    assert any("meh" in w for w in warnings)


def test_limit_applies_to_user_documents_too(tmp_path: Path) -> None:
    rows = [{"id": f"d{i}", "text": f"t{i}", "created_at": f"2024-03-{1 + i % 28:02d}"} for i in range(50)]
    source = DocumentSource(path=str(_write(tmp_path / "d.csv", rows)))
    picked = documents_for_month("2024-03", source=source, limit_per_month=7)
    assert picked.height == 7 and picked.equals(documents_for_month("2024-03", source=source, limit_per_month=7))


# ------------------------------------------------------------------------------------------ company metrics


def test_generated_metrics_are_deterministic_and_plausible() -> None:
    frame = company_metrics_for_month("2024-06")
    assert frame.schema == pl.Schema(METRICS_SCHEMA)
    assert frame["company"].to_list() == list(DEFAULT_COMPANIES)
    assert frame.equals(company_metrics_for_month(date(2024, 6, 1)))
    assert not frame.equals(company_metrics_for_month("2024-06", seed=8))
    assert (frame["month"] == date(2024, 6, 1)).all()
    assert frame["revenue_usd"].min() > 100_000
    assert frame["gross_margin_pct"].is_between(20, 90).all()
    assert frame["churn_pct"].is_between(0.1, 10).all()
    assert frame["nps"].is_between(-100, 100).all()
    assert (frame["active_customers"] > 0).all() and (frame["support_tickets"] >= 0).all()


def test_growth_is_consistent_with_the_previous_month_and_smooth() -> None:
    year = pl.concat([company_metrics_for_month(m) for m in [date(2023, 12, 1), *MONTHS_2024]])
    year = year.sort("company", "month").with_columns(
        (100 * (pl.col("revenue_usd") / pl.col("revenue_usd").shift(1).over("company") - 1)).alias("expected")
    )
    checked = year.drop_nulls("expected")
    assert checked.height == 5 * 12
    assert ((checked["revenue_growth_pct"] - checked["expected"]).abs() < 0.01).all()
    assert (checked["revenue_growth_pct"].abs() < 20).all()


def test_other_companies_and_any_month() -> None:
    frame = company_metrics_for_month("2031-02", companies=["Zed Co"])
    assert frame["company"].to_list() == ["Zed Co"] and frame.height == 1
    assert company_metrics_for_month("2024-01", companies=[]).height == 0


def test_metrics_from_a_user_file(tmp_path: Path) -> None:
    generated = pl.concat([company_metrics_for_month(m) for m in MONTHS_2024[:3]])
    csv = tmp_path / "m.csv"
    generated.with_columns(pl.col("month").dt.strftime("%Y-%m")).write_csv(csv)
    parquet = tmp_path / "m.parquet"
    generated.write_parquet(parquet)
    for path in (csv, parquet):
        frame = company_metrics_for_month("2024-02", path=str(path))
        assert frame.equals(company_metrics_for_month("2024-02")), path
    assert company_metrics_for_month("2024-09", path=str(parquet)).height == 0


def test_metrics_file_errors_say_what_is_wrong(tmp_path: Path) -> None:
    base = company_metrics_for_month("2024-02")
    (tmp_path / "short.csv").write_text("month,company\n2024-02,Acme\n")
    with pytest.raises(SourceError, match=r"need columns .*lacks revenue_usd"):
        company_metrics_for_month("2024-02", path=str(tmp_path / "short.csv"))
    base.with_columns(pl.lit("Feb").alias("month")).write_csv(tmp_path / "badmonth.csv")
    with pytest.raises(SourceError, match=r"month that is not a date .*'Feb'"):
        company_metrics_for_month("2024-02", path=str(tmp_path / "badmonth.csv"))
    pl.concat([base, base]).write_parquet(tmp_path / "dupes.parquet")
    with pytest.raises(SourceError, match="several rows for 2024-02"):
        company_metrics_for_month("2024-02", path=str(tmp_path / "dupes.parquet"))
    base.with_columns(pl.lit("lots").alias("nps")).write_csv(tmp_path / "types.csv")
    with pytest.raises(SourceError, match="wrong type"):
        company_metrics_for_month("2024-02", path=str(tmp_path / "types.csv"))
    with pytest.raises(SourceError, match="does not exist"):
        company_metrics_for_month("2024-02", path=str(tmp_path / "none.csv"))

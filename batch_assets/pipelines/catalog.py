"""The pipelines that ship: document embeddings, sentiment labels, monthly company reports.

A fourth is one more `PipelineSpec` added to PIPELINES (see the README).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import duckdb
import orjson
import polars as pl

from batch_assets.batching.prepare import prepare_chat_requests, prepare_embedding_requests
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, Outcome
from batch_assets.batching.request_files import PreparedRequest
from batch_assets.batching.requests import json_schema_response_format, label_schema
from batch_assets.batching.templates import Conversations, DerivedTexts
from batch_assets.pipelines.spec import CheckOutcome, PipelineSettings, PipelineSpec, QualityCheck
from batch_assets.warehouse import label_accuracy, read_table

SENTIMENT_LABELS = ("positive", "negative", "neutral")


def _succeeded(joined: pl.DataFrame) -> pl.DataFrame:
    return joined.filter(pl.col("outcome") == Outcome.SUCCEEDED)


# -- embeddings -------------------------------------------------------------------------------------
def _embedding_requests(items: pl.DataFrame, settings: PipelineSettings) -> Iterable[PreparedRequest]:
    return prepare_embedding_requests(items["item_id"].to_list(), items["text"].to_list(), settings.model,
                                      dimensions=settings.dimensions)


def _embedding_rows(joined: pl.DataFrame, settings: PipelineSettings) -> pl.DataFrame:
    done = _succeeded(joined)
    return done.select(
        pl.col("item_id").alias("document_id"),
        pl.col("response_model").alias("model"),
        pl.col("embedding").list.len().cast(pl.Int32).alias("dims"),
        pl.col("embedding"),
        "batch_id", "attempt",
    )


EMBEDDINGS = PipelineSpec(
    name="embeddings",
    description="Embeds every document of the month (one request per document).",
    endpoint=EMBEDDINGS_URL,
    source="raw_documents",
    item_id_column="id",
    output_table="document_embeddings",
    output_columns={"document_id": "raw_documents.id", "model": "model that answered", "dims": "vector length",
                    "embedding": "FLOAT[dims] unit vector", "batch_id": "batch that produced it",
                    "attempt": "submission attempt (1 = first)"},
    defaults=PipelineSettings(model="text-embedding-3-small"),
    build_requests=_embedding_requests,
    build_outputs=_embedding_rows,
    output_source_columns=(),
)


# -- sentiment labels ---------------------------------------------------------------------------------
# A few examples lift the small local model well above chance (45 March reviews: 51% vs 36% without them).
SENTIMENT_PROMPT = (
    "You label movie reviews. A review that praises the film is positive. A review that criticises the film is "
    "negative. A plot summary that gives no opinion is neutral.\n\nExamples:\n"
    'Review: A triumph: funny, moving and beautifully made. -> {"label": "positive"}\n'
    'Review: Dull, clumsy and far too long. -> {"label": "negative"}\n'
    'Review: A young woman moves to Paris to work for a fashion magazine. -> {"label": "neutral"}\n\n'
    "Reply in JSON."
)


def _sentiment_requests(items: pl.DataFrame, settings: PipelineSettings) -> Iterable[PreparedRequest]:
    labels = settings.labels or SENTIMENT_LABELS
    conversations = Conversations(({"role": "system", "content": settings.system_prompt},), items["text"],
                                  user_prefix="Review: ")
    return prepare_chat_requests(
        items["item_id"].to_list(), conversations, settings.model, max_tokens=settings.max_tokens,
        temperature=settings.temperature, seed=settings.seed,
        response_format=json_schema_response_format("sentiment", label_schema(labels)),
    )


def parse_label(content: str | None, labels: tuple[str, ...]) -> str | None:
    """The label of a structured answer, or None when it is not valid JSON with a known label."""
    if not content:
        return None
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    label = value.get("label") if isinstance(value, dict) else None
    return label if label in labels else None


def parse_labels(contents: pl.Series, labels: tuple[str, ...]) -> pl.Series:
    """`parse_label` over a column: compact answers (`{"label":"x"}`, what structured output sends) by lookup,
    only the others through Python."""
    compact = {orjson.dumps({"label": label}).decode(): label for label in labels}
    looked_up = contents.replace_strict(compact, default=None, return_dtype=pl.String)
    others = looked_up.is_null() & contents.is_not_null()
    if not others.any():
        return looked_up.rename("label")
    # A comprehension, not map_elements: polars calls back into Python per row either way, this costs less.
    slow = [parse_label(c, labels) if other else label
            for c, label, other in zip(contents.to_list(), looked_up.to_list(), others.to_list(), strict=True)]
    return pl.Series("label", slow, dtype=pl.String)


def _label_rows(joined: pl.DataFrame, settings: PipelineSettings) -> pl.DataFrame:
    labels = settings.labels or SENTIMENT_LABELS
    done = _succeeded(joined)
    parsed = parse_labels(done["content"], labels)
    return done.select(
        pl.col("item_id").alias("document_id"),
        pl.col("response_model").alias("model"),
        parsed,
        pl.col("label").alias("gold_label"),
        pl.col("content").alias("raw_content"),
        "batch_id", "attempt",
    )


def _accuracy_check(con: duckdb.DuckDBPyConnection, month: date) -> CheckOutcome:
    accuracy, confusion, n_labelled = label_accuracy(con, month)
    if accuracy is None:
        return CheckOutcome(True, {"documents_with_gold_label": 0}, "no gold labels this month: nothing to compare")
    chance = 1 / len(SENTIMENT_LABELS)
    counts = {f"{gold}→{label}": n for gold, label, n in confusion.iter_rows()}
    predicted = (*SENTIMENT_LABELS, None)
    cells = {(gold, label): n for gold, label, n in confusion.iter_rows()}
    header = "| gold \\ predicted | " + " | ".join(label or "invalid" for label in predicted) + " |"
    rows = [f"| {gold} | " + " | ".join(str(cells.get((gold, label), 0)) for label in predicted) + " |"
            for gold in SENTIMENT_LABELS]
    table = "\n".join([header, "|---" * (len(predicted) + 1) + "|", *rows])
    return CheckOutcome(accuracy > chance, {
        "accuracy": round(accuracy, 4), "documents_with_gold_label": n_labelled, "chance_accuracy": round(chance, 4),
        "confusion": counts,
    }, f"accuracy {accuracy:.1%} over {n_labelled} documents with a gold label (chance: {chance:.1%})",
        markdown={"confusion_table": table})


def _valid_labels_check(con: duckdb.DuckDBPyConnection, month: date) -> CheckOutcome:
    rows = read_table(con, "document_labels", month)
    invalid = rows.filter(pl.col("label").is_null()).height
    return CheckOutcome(invalid == 0, {"labelled": rows.height, "invalid_answers": invalid},
                        f"{invalid} of {rows.height} answers were not a valid label")


SENTIMENT = PipelineSpec(
    name="sentiment",
    description="Labels each document positive / negative / neutral with a JSON-schema constrained chat model.",
    endpoint=CHAT_COMPLETIONS_URL,
    source="raw_documents",
    item_id_column="id",
    output_table="document_labels",
    output_columns={"document_id": "raw_documents.id", "model": "model that answered",
                    "label": "predicted label (NULL when the answer was not a valid label)",
                    "gold_label": "label the document came with, if any", "raw_content": "the model's answer",
                    "batch_id": "batch that produced it", "attempt": "submission attempt (1 = first)"},
    defaults=PipelineSettings(model="gpt-4o-mini", system_prompt=SENTIMENT_PROMPT, max_tokens=32, temperature=0.0,
                              seed=7, labels=SENTIMENT_LABELS, expected_output_tokens=6),
    build_requests=_sentiment_requests,
    build_outputs=_label_rows,
    output_source_columns=("label",),  # the gold label
    checks=(
        QualityCheck("label_accuracy", "Accuracy against the documents' gold labels, with confusion counts; "
                     "warns when no better than chance.", _accuracy_check),
        QualityCheck("labels_valid", "Every answer parsed as one of the labels (structured output).",
                     _valid_labels_check),
    ),
)


# -- monthly company reports ------------------------------------------------------------------------------
REPORT_PROMPT = (
    "You are a financial analyst. Write a short monthly performance report (three to five sentences) for "
    "the company from its metrics: say what improved, what worsened, and one thing to watch."
)
_METRIC_LABELS = {
    "revenue_usd": "Revenue (USD)", "revenue_growth_pct": "Revenue growth vs last month (%)",
    "gross_margin_pct": "Gross margin (%)", "active_customers": "Active customers", "churn_pct": "Churn (%)",
    "support_tickets": "Support tickets", "nps": "Net promoter score",
}


def metrics_prompt(row: dict[str, object]) -> str:
    lines = [f"Company: {row['company']}", f"Month: {row['month']:%B %Y}"]
    for column, label in _METRIC_LABELS.items():
        value = row.get(column)
        lines.append(f"{label}: {value:,.2f}" if isinstance(value, float) else f"{label}: {value}")
    return "\n".join(lines)


def metrics_prompts(items: pl.DataFrame) -> pl.Series:
    """:func:`metrics_prompt` of every row, the same strings, built column by column: integers and strings in
    polars, floats and dates by Python's own formatting (the bytes, hence the body hashes, must not change)."""
    months = items["month"].unique().to_list()
    lines = [_metric_line(items, "company", "Company"),
             items["month"].replace_strict(months, [f"Month: {m:%B %Y}" for m in months], return_dtype=pl.String)]
    lines += [_metric_line(items, column, label) for column, label in _METRIC_LABELS.items()]
    return pl.DataFrame(lines).select(pl.concat_str(pl.all(), separator="\n")).to_series()


def _metric_line(items: pl.DataFrame, column: str, label: str) -> pl.Series:
    """``f"{label}: {value}"`` of each row (``,.2f`` for a float), as :func:`metrics_prompt` writes it."""
    name = f"{column}_line"
    if column not in items.columns:
        return pl.Series(name, [f"{label}: None"] * items.height, dtype=pl.String)
    values = items[column]
    if values.dtype.is_integer() or values.dtype == pl.String:
        return (f"{label}: " + values.cast(pl.String).fill_null("None")).rename(name)
    if values.dtype.is_float():
        return pl.Series(name, [f"{label}: {v:,.2f}" if v is not None else f"{label}: None"
                                for v in values.to_list()], dtype=pl.String)
    return pl.Series(name, [f"{label}: {v:,.2f}" if isinstance(v, float) else f"{label}: {v}"
                            for v in values.to_list()], dtype=pl.String)


def _report_requests(items: pl.DataFrame, settings: PipelineSettings) -> Iterable[PreparedRequest]:
    # The prompts are made a chunk at a time, as the chunk is written (a month's would be ~260 B a company).
    conversations = Conversations(({"role": "system", "content": settings.system_prompt},),
                                  DerivedTexts(items, metrics_prompts))
    return prepare_chat_requests(items["item_id"].to_list(), conversations, settings.model,
                                 max_tokens=settings.max_tokens, temperature=settings.temperature, seed=settings.seed)


def _report_rows(joined: pl.DataFrame, settings: PipelineSettings) -> pl.DataFrame:
    return _succeeded(joined).select(
        pl.col("item_id").alias("company"),
        pl.col("response_model").alias("model"),
        pl.col("content").alias("report"),
        pl.col("completion_tokens").cast(pl.Int64),
        "batch_id", "attempt",
    )


REPORTS = PipelineSpec(
    name="reports",
    description="Writes a short performance report per company per month from its metrics.",
    endpoint=CHAT_COMPLETIONS_URL,
    source="company_metrics",
    item_id_column="company",
    output_table="monthly_reports",
    output_columns={"company": "company_metrics.company", "model": "model that answered",
                    "report": "the report text", "completion_tokens": "tokens the report used",
                    "batch_id": "batch that produced it", "attempt": "submission attempt (1 = first)"},
    defaults=PipelineSettings(model="gpt-4o-mini", system_prompt=REPORT_PROMPT, max_tokens=160, temperature=0.3,
                              seed=7, expected_output_tokens=120),
    build_requests=_report_requests,
    build_outputs=_report_rows,
    output_source_columns=(),
)

PIPELINES: tuple[PipelineSpec, ...] = (EMBEDDINGS, SENTIMENT, REPORTS)

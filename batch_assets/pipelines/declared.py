"""A pipeline declared as data — the attributes of a pipeline component's `defs.yaml` — checked when it loads and
turned into the same `PipelineSpec` a Python declaration is. No Dagster: a script can validate a declaration with
`PipelineDeclaration.model_validate(...)`.

What a declaration says: the endpoint (chat completions, embeddings or Responses), the model and prompt, which
source table it reads and how an item's text is made from the row (`input`, a template over the row's columns),
a structured answer (`labels` for a classifier, or an `answer_schema`), the output table and what fills each
column, and checks. Custom row builders are dotted paths to Python functions (`build_requests`, `build_outputs`,
a check's `function`): the escape hatch when a template and the column values are not enough.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, Literal

import duckdb
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from batch_assets.batching.prepare import prepare_chat_requests, prepare_embedding_requests, prepare_responses_requests
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, Outcome
from batch_assets.batching.request_files import PreparedRequest
from batch_assets.batching.requests import (
    json_schema_response_format,
    json_schema_text_format,
    label_schema,
)
from batch_assets.batching.templates import Conversations, DerivedTexts
from batch_assets.pipelines.declared_rules import (
    ANSWER_COLUMNS,
    SOURCE_ITEM_ID_COLUMNS,
    VALUES_HELP,
    check_declaration,
    load_function,
)
from batch_assets.pipelines.spec import CheckOutcome, PipelineSettings, PipelineSpec, QualityCheck, SourceName
from batch_assets.warehouse import TABLES, polars_schema, read_table

DeclaredEndpoint = Literal["/v1/chat/completions", "/v1/embeddings", "/v1/responses"]


class _Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputColumn(_Declaration):
    """One column of the output table."""

    name: str = Field(description="column name")
    value: str | None = Field(default=None, description=f"what fills it: {VALUES_HELP} (not needed with "
                                                        "build_outputs)")
    type: str | None = Field(default=None, description="DuckDB type (default: the value's own type; "
                                                       "VARCHAR for answer.<field>)")
    description: str = ""


class OutputTable(_Declaration):
    """The output table: one month replaced at a time."""

    table: str = Field(description="table name in the warehouse (not one it ships)")
    columns: list[OutputColumn]
    key: list[str] = Field(default=[], description="columns that identify a row within a month (default: the "
                                                   "column holding item_id)")


class AccuracyCheck(_Declaration):
    column: str = Field(description="the predicted column")
    gold: str = Field(description="the column holding the right answer (rows where it is empty are left out)")
    better_than: float | None = Field(default=None, description="passes above this accuracy (default: chance, "
                                                                "1 / labels)")


class CheckDeclaration(_Declaration):
    """A check over a month of the output table: exactly one of not_null, accuracy, function."""

    name: str
    description: str = ""
    not_null: str | None = Field(default=None, description="passes when every row has a value in this column")
    accuracy: AccuracyCheck | None = None
    function: str | None = Field(default=None, description="dotted path to a Python function (connection, "
                                                           "month) -> CheckOutcome")
    blocking: bool = Field(default=False, description="a failure is an error, not a warning")

    @model_validator(mode="after")
    def _one_kind(self) -> CheckDeclaration:
        kinds = [kind for kind in ("not_null", "accuracy", "function") if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(f"check {self.name!r}: give exactly one of not_null, accuracy, function "
                             f"(got {kinds or 'none'})")
        return self


class PipelineDeclaration(_Declaration):
    """A batch pipeline: what it asks of a model for every item of a month, and how answers become rows."""

    name: str = Field(description="names its assets (<name>_requests ...), jobs and run config")
    description: str = ""
    endpoint: DeclaredEndpoint
    model: str = Field(description="the model the requests name (run config can change it)")
    source: SourceName = "raw_documents"
    item_id_column: str | None = Field(default=None, description="default: id (raw_documents), company "
                                                                  "(company_metrics)")
    prompt: str = Field(default="", description="system prompt (chat) or instructions (Responses)")
    input: str = Field(default="{text}", description="the item's text: a template over the source row's "
                                                     "columns, e.g. 'Review: {text}'")
    max_tokens: int | None = Field(default=None, description="answer length cap (Responses: max_output_tokens, "
                                                             "at least 16)")
    temperature: float | None = None
    seed: int | None = Field(default=None, description="chat only")
    dimensions: int | None = Field(default=None, description="embeddings only: shorter vectors")
    labels: list[str] = Field(default=[], description="a classifier: the answer is {\"label\": one of these}")
    answer_schema: dict[str, Any] | None = Field(default=None, description="a JSON schema (type object) the "
                                                                            "answer follows")
    expected_output_tokens: int = Field(default=0, description="for the cost estimate before submitting")
    output: OutputTable
    checks: list[CheckDeclaration] = []
    build_requests: str | None = Field(default=None, description="dotted path to a Python function (items, "
                                                                 "settings) -> requests, instead of the template")
    build_outputs: str | None = Field(default=None, description="dotted path to a Python function (joined rows, "
                                                                "settings) -> output rows, instead of the values")

    @model_validator(mode="after")
    def _consistent(self) -> PipelineDeclaration:
        check_declaration(self)
        return self

    def to_spec(self) -> PipelineSpec:
        """The pipeline as the platform runs it."""
        defaults = self.settings()
        requests = load_function(self.build_requests, "build_requests") if self.build_requests else \
            self._build_requests
        outputs = load_function(self.build_outputs, "build_outputs") if self.build_outputs else self._build_outputs
        return PipelineSpec(
            name=self.name,
            description=self.description or f"The {self.name} pipeline (declared in YAML).",
            endpoint=self.endpoint,
            source=self.source,
            item_id_column=self.item_id(),
            output_table=self.output.table,
            output_columns={c.name: c.description for c in self.output.columns},
            defaults=defaults,
            build_requests=requests,
            build_outputs=outputs,
            checks=tuple(self._check(check) for check in self.checks),
            output_schema={"month": "DATE", **{c.name: self._column_type(c) for c in self.output.columns}},
            output_key=("month", *self._key()),
            output_source_columns=None if self.build_outputs else self._source_columns(),
        )

    def settings(self) -> PipelineSettings:
        return PipelineSettings(model=self.model, system_prompt=self.prompt, max_tokens=self.max_tokens,
                                temperature=self.temperature, seed=self.seed, dimensions=self.dimensions,
                                labels=tuple(self.labels), expected_output_tokens=self.expected_output_tokens)

    def item_id(self) -> str:
        return self.item_id_column or SOURCE_ITEM_ID_COLUMNS[self.source]

    # -- requests ------------------------------------------------------------------------------------------
    def _input_text(self) -> pl.Expr:
        parts: list[pl.Expr] = []
        for literal, column, _, _ in string.Formatter().parse(self.input):
            if literal:
                parts.append(pl.lit(literal))
            if column is not None:
                parts.append(pl.col(column).cast(pl.String).fill_null(""))
        return pl.concat_str(parts) if parts else pl.lit("")

    def structured_schema(self, settings: PipelineSettings) -> dict[str, Any] | None:
        """The JSON schema the answers follow: the label schema of a classifier (its labels as run config
        has them), else the declared answer_schema."""
        if settings.labels:
            return label_schema(settings.labels)
        return self.answer_schema

    def _build_requests(self, items: pl.DataFrame, settings: PipelineSettings) -> Iterable[PreparedRequest]:
        ids = items["item_id"].to_list()
        input_text = self._input_text()
        if self.endpoint == CHAT_COMPLETIONS_URL:  # each chunk's texts are made as it is written
            items.head(0).select(input_text)  # a column the input names and the month lacks fails now
            schema = self.structured_schema(settings)
            system = ({"role": "system", "content": settings.system_prompt},) if settings.system_prompt else ()
            texts_of = DerivedTexts(items, lambda rows: rows.select(input_text).to_series())
            return prepare_chat_requests(
                ids, Conversations(system, texts_of), settings.model,
                max_tokens=settings.max_tokens, temperature=settings.temperature, seed=settings.seed,
                response_format=json_schema_response_format(self.name, schema) if schema else None)
        texts = items.select(input_text).to_series().to_list()
        if self.endpoint == EMBEDDINGS_URL:
            return prepare_embedding_requests(ids, texts, settings.model, dimensions=settings.dimensions)
        schema = self.structured_schema(settings)
        if settings.seed is not None:
            raise ValueError(f"{self.name}: the Responses API takes no seed; leave seed unset in the run config")
        return prepare_responses_requests(
            ids, texts, settings.model, instructions=settings.system_prompt or None,
            max_output_tokens=settings.max_tokens, temperature=settings.temperature,
            text_format=json_schema_text_format(self.name, schema) if schema else None)

    # -- outputs -------------------------------------------------------------------------------------------
    def _column_type(self, column: OutputColumn) -> str:
        if column.type is not None:
            return column.type
        value = column.value or ""
        if value in ANSWER_COLUMNS:
            return ANSWER_COLUMNS[value][1]
        if value == "dims":
            return "INTEGER"
        if value.startswith("source."):
            return TABLES[self.source][value.removeprefix("source.")]
        return "VARCHAR"  # label, answer.<field>

    def _column_value(self, column: OutputColumn, settings: PipelineSettings) -> pl.Expr:
        value = column.value or ""
        if value in ANSWER_COLUMNS:
            expr = pl.col(ANSWER_COLUMNS[value][0])
        elif value == "dims":
            expr = pl.col("embedding").list.len()
        elif value == "label":
            label = pl.col("content").str.json_path_match("$.label")
            expr = pl.when(label.is_in(list(settings.labels))).then(label)  # NULL: not one of the labels
        elif value.startswith("answer."):
            expr = pl.col("content").str.json_path_match(f"$.{value.removeprefix('answer.')}")
        else:
            expr = pl.col(value.removeprefix("source."))
        # Answers may hold anything: a value that is not of the column's type is NULL, not a failed write.
        return expr.cast(polars_schema({column.name: self._column_type(column)})[column.name], strict=False)

    def _build_outputs(self, joined: pl.DataFrame, settings: PipelineSettings) -> pl.DataFrame:
        done = joined.filter(pl.col("outcome") == Outcome.SUCCEEDED)
        return done.select([self._column_value(c, settings).alias(c.name) for c in self.output.columns])

    def _source_columns(self) -> tuple[str, ...]:
        """The source columns the output columns take their values from."""
        answer_values = {*ANSWER_COLUMNS, "dims", "label", "item_id", "attempt", "batch_id"}
        return tuple(dict.fromkeys(
            value.removeprefix("source.") for value in (c.value or "" for c in self.output.columns)
            if value and value not in answer_values and not value.startswith("answer.")))

    def _key(self) -> list[str]:
        if self.output.key:
            return self.output.key
        return [c.name for c in self.output.columns if c.value == "item_id"][:1]

    # -- checks --------------------------------------------------------------------------------------------
    def _check(self, check: CheckDeclaration) -> QualityCheck:
        table = self.output.table
        if check.function is not None:
            run: Callable[[duckdb.DuckDBPyConnection, date], CheckOutcome] = load_function(
                check.function, f"check {check.name}")
            description = check.description or f"{check.function} over the month's {table}"
        elif check.not_null is not None:
            run = _not_null_check(table, check.not_null)
            description = check.description or f"Every row of {table} has a {check.not_null}."
        else:
            assert check.accuracy is not None  # one kind per check, validated
            threshold = check.accuracy.better_than
            if threshold is None:
                threshold = 1 / len(self.labels) if self.labels else 0.0
            run = _accuracy_check(table, check.accuracy.column, check.accuracy.gold, threshold)
            description = check.description or (f"Share of {check.accuracy.column} equal to {check.accuracy.gold}; "
                                                 f"warns at {threshold:.1%} or less.")
        return QualityCheck(check.name, description, run, blocking=check.blocking)


def _not_null_check(table: str, column: str) -> Callable[[duckdb.DuckDBPyConnection, date], CheckOutcome]:
    def run(con: duckdb.DuckDBPyConnection, month: date) -> CheckOutcome:
        rows = read_table(con, table, month)
        missing = rows[column].null_count()
        return CheckOutcome(missing == 0, {"rows": rows.height, "missing": missing},
                            f"{missing} of {rows.height} rows have no {column}")
    return run


def _accuracy_check(table: str, column: str, gold: str, threshold: float
                    ) -> Callable[[duckdb.DuckDBPyConnection, date], CheckOutcome]:
    def run(con: duckdb.DuckDBPyConnection, month: date) -> CheckOutcome:
        scored = read_table(con, table, month).filter(pl.col(gold).is_not_null())
        if scored.height == 0:
            return CheckOutcome(True, {"compared": 0}, f"no {gold} this month: nothing to compare")
        accuracy = scored.filter(pl.col(column) == pl.col(gold)).height / scored.height
        return CheckOutcome(accuracy > threshold, {"accuracy": round(accuracy, 4), "compared": scored.height,
                                                   "threshold": round(threshold, 4)},
                            f"accuracy {accuracy:.1%} over {scored.height} rows (threshold {threshold:.1%})")
    return run

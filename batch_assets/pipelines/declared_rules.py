"""What a pipeline declaration may say, and the checks it passes when it loads (`check_declaration`): every rule
that can be known broken before a run, each with a message that says what to change. No Dagster."""

from __future__ import annotations

import importlib
import re
import string
from typing import TYPE_CHECKING, Any

from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, RESPONSES_URL
from batch_assets.batching.requests import (
    chat_body,
    embedding_body,
    json_schema_response_format,
    json_schema_text_format,
    responses_body,
)
from batch_assets.warehouse import TABLES, WarehouseError

if TYPE_CHECKING:
    from batch_assets.pipelines.declared import PipelineDeclaration

# The column that identifies an item of each source within a month.
SOURCE_ITEM_ID_COLUMNS: dict[str, str] = {"raw_documents": "id", "company_metrics": "company"}

# Output column values read straight from an item's answer: value → (column of the joined rows, DuckDB type).
ANSWER_COLUMNS: dict[str, tuple[str, str]] = {
    "item_id": ("item_id", "VARCHAR"),
    "model": ("response_model", "VARCHAR"),  # the model that answered
    "answer": ("content", "VARCHAR"),  # the answer's text (chat, Responses)
    "embedding": ("embedding", "FLOAT[]"),  # the vector (embeddings)
    "batch_id": ("batch_id", "VARCHAR"),
    "attempt": ("attempt", "INTEGER"),
    "prompt_tokens": ("prompt_tokens", "BIGINT"),
    "completion_tokens": ("completion_tokens", "BIGINT"),
}
TEXT_ONLY = {"answer", "completion_tokens", "label"}  # values an embeddings answer does not have
VALUES_HELP = ("item_id, model, answer, answer.<field>, label, embedding, dims, batch_id, attempt, prompt_tokens, "
               "completion_tokens, source.<column>")
NAME_PATTERN = r"[a-z][a-z0-9_]*"


def load_function(path: str, what: str) -> Any:
    """The Python object a dotted path names; an error that says what to fix when there is none."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{what}: {path!r} is not a dotted path such as my_package.my_module.my_function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what}: cannot import {module_name} ({error}); check the dotted path {path!r}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"{what}: {module_name} has no function {attribute!r}")
    return function


def check_declaration(d: PipelineDeclaration) -> None:
    """Everything that can be known wrong before a run: each message says what to change."""
    if not re.fullmatch(NAME_PATTERN, d.name):
        raise ValueError(f"name {d.name!r}: use lower-case letters, digits and underscores, starting with a letter")
    source_columns = set(TABLES[d.source])
    if d.expected_output_tokens < 0:
        raise ValueError(f"expected_output_tokens must be >= 0, got {d.expected_output_tokens}")
    if d.item_id() not in source_columns:
        raise ValueError(f"item_id_column {d.item_id()!r} is not a column of {d.source} "
                         f"({', '.join(sorted(source_columns))})")
    embeddings = d.endpoint == EMBEDDINGS_URL
    if embeddings:
        not_for_embeddings = [name for name in ("prompt", "max_tokens", "temperature", "seed", "labels",
                                                "answer_schema") if getattr(d, name)]
        if not_for_embeddings:
            raise ValueError(f"an embeddings pipeline takes no {', '.join(not_for_embeddings)}")
    elif d.dimensions is not None:
        raise ValueError("dimensions is for embeddings pipelines (endpoint /v1/embeddings)")
    if d.labels and d.answer_schema:
        raise ValueError("give labels (a classifier) or answer_schema, not both")
    if d.endpoint == RESPONSES_URL and d.seed is not None:
        raise ValueError("the Responses API takes no seed: remove seed (or use /v1/chat/completions)")
    if d.build_requests is None:
        for _, column, spec, conversion in string.Formatter().parse(d.input):
            if column is not None and (column not in source_columns or spec or conversion):
                raise ValueError(f"input {d.input!r}: {{{column}}} must name a column of {d.source} "
                                 f"({', '.join(sorted(source_columns))}), without a format; for anything more, "
                                 "write a build_requests function")
        check_body(d)
    check_output(d, source_columns, embeddings)
    output_columns = {c.name for c in d.output.columns}
    for check in d.checks:
        named = [check.not_null] if check.not_null else \
            [check.accuracy.column, check.accuracy.gold] if check.accuracy else []
        unknown = [name for name in named if name not in output_columns]
        if unknown:
            raise ValueError(f"check {check.name!r}: {unknown} are not columns of {d.output.table}")
        if not re.fullmatch(NAME_PATTERN, check.name):
            raise ValueError(f"check name {check.name!r}: use lower-case letters, digits and underscores")
        if check.function:
            load_function(check.function, f"check {check.name}")
        if check.accuracy and check.accuracy.better_than is not None and not 0 <= check.accuracy.better_than <= 1:
            raise ValueError(f"check {check.name!r}: better_than is a share, within [0, 1]")
    for path, what in ((d.build_requests, "build_requests"), (d.build_outputs, "build_outputs")):
        if path:
            load_function(path, what)
    try:
        d.to_spec()  # the warehouse's own checks of the output table: name, types, key
    except WarehouseError as error:
        raise ValueError(f"output: {error}") from None


def check_body(d: PipelineDeclaration) -> None:
    """One request body built with the declared defaults, so a bad model, cap or schema fails at load."""
    settings = d.settings()
    schema = d.structured_schema(settings)
    if d.endpoint == EMBEDDINGS_URL:
        embedding_body(d.model, "x", dimensions=d.dimensions)
    elif d.endpoint == CHAT_COMPLETIONS_URL:
        chat_body(d.model, [{"role": "user", "content": "x"}], max_tokens=d.max_tokens, temperature=d.temperature,
                  seed=d.seed, response_format=json_schema_response_format(d.name, schema) if schema else None)
    else:
        responses_body(d.model, "x", instructions=d.prompt or None, max_output_tokens=d.max_tokens,
                       temperature=d.temperature,
                       text_format=json_schema_text_format(d.name, schema) if schema else None)


def check_output(d: PipelineDeclaration, source_columns: set[str], embeddings: bool) -> None:
    if not d.output.columns:
        raise ValueError("output.columns: declare at least one column")
    names = [c.name for c in d.output.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated or "month" in names:
        raise ValueError(f"output columns {duplicated or ['month']}: each name once, and no 'month' (every output "
                         "table has it)")
    for column in d.output.columns:
        value = column.value
        if value is None:
            if d.build_outputs is None:
                raise ValueError(f"output column {column.name!r} needs a value ({VALUES_HELP})")
            if column.type is None:
                raise ValueError(f"output column {column.name!r} needs a type: build_outputs fills it")
            continue
        known = value in ANSWER_COLUMNS or value in ("dims", "label") or value.startswith(("answer.", "source."))
        if not known:
            raise ValueError(f"output column {column.name!r}: unknown value {value!r}; use one of {VALUES_HELP}")
        if value.startswith("source.") and value.removeprefix("source.") not in source_columns:
            raise ValueError(f"output column {column.name!r}: {d.source} has no column "
                             f"{value.removeprefix('source.')!r} ({', '.join(sorted(source_columns))})")
        text_value = value in TEXT_ONLY or value.startswith("answer.")
        if embeddings and text_value:
            raise ValueError(f"output column {column.name!r}: an embeddings answer has no {value}")
        if not embeddings and value in ("embedding", "dims"):
            raise ValueError(f"output column {column.name!r}: only an embeddings answer has {value}")
        if value == "label" and not d.labels:
            raise ValueError(f"output column {column.name!r}: value label needs labels (a classifier)")
        if value.startswith("answer.") and not (d.answer_schema or d.labels):
            raise ValueError(f"output column {column.name!r}: {value} reads a field of a structured answer; give "
                             "an answer_schema (or labels)")
    key = d.output.key or [c.name for c in d.output.columns if c.value == "item_id"][:1]
    if not key:
        raise ValueError("output: add a column with value item_id, or name the columns that identify a row "
                         "(output.key)")
    unknown_key = [k for k in key if k not in names]
    if unknown_key:
        raise ValueError(f"output.key {unknown_key} must be output columns")


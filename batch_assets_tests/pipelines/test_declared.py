"""A pipeline declared as data: what is wrong fails when it loads, saying what to change; what is right builds the
requests and rows a Python declaration would."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import orjson
import polars as pl
import pytest
import yaml
from pydantic import ValidationError

from batch_assets.pipelines.declared import PipelineDeclaration
from batch_assets.pipelines.spec import CheckOutcome, PipelineSettings

ROOT = Path(__file__).resolve().parents[2]
ITEMS = pl.DataFrame({"id": ["d1", "d2"], "text": ["Loved it.", "Dull."], "label": ["positive", None],
                      "item_id": ["d1", "d2"]})


def declaration(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "moods", "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini", "prompt": "Label the mood.",
        "input": "Review: {text}", "max_tokens": 20, "labels": ["happy", "sad"],
        "output": {"table": "document_moods", "columns": [
            {"name": "document_id", "value": "item_id"}, {"name": "mood", "value": "label"},
            {"name": "gold", "value": "source.label"}]},
        "checks": [{"name": "moods_valid", "not_null": "mood"},
                   {"name": "mood_accuracy", "accuracy": {"column": "mood", "gold": "gold"}}],
    }
    return {**base, **changes}


def bodies(spec_declaration: PipelineDeclaration, settings: PipelineSettings | None = None) -> list[dict[str, Any]]:
    spec = spec_declaration.to_spec()
    return [request.body for request in spec.build_requests(ITEMS, settings or spec.defaults)]


def test_the_shipped_yaml_pipeline_is_a_valid_declaration() -> None:
    attributes = yaml.safe_load((ROOT / "batch_assets" / "defs" / "titles" / "defs.yaml").read_text())["attributes"]
    spec = PipelineDeclaration.model_validate(attributes).to_spec()  # no Dagster needed
    assert (spec.endpoint, spec.output_table, spec.output_key) == ("/v1/responses", "document_titles",
                                                                   ("month", "document_id"))


def test_the_readme_shows_the_shipped_yaml_pipeline_as_it_is() -> None:
    shipped = (ROOT / "batch_assets" / "defs" / "titles" / "defs.yaml").read_text()
    declaration_lines = shipped[shipped.index("type: "):]
    assert f"```yaml\n{declaration_lines}```" in (ROOT / "README.md").read_text()


def test_a_classifier_asks_for_one_of_its_labels_and_keeps_only_valid_ones() -> None:
    declared = PipelineDeclaration.model_validate(declaration())
    [first, _] = bodies(declared)
    assert first["messages"] == [{"role": "system", "content": "Label the mood."},
                                 {"role": "user", "content": "Review: Loved it."}]
    schema = first["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["happy", "sad"]
    # Run config may change the labels: the requests and the rows follow the settings, not the declaration.
    relabelled = PipelineSettings(model="gpt-4o-mini", labels=("up", "down"))
    assert bodies(declared, relabelled)[0]["response_format"]["json_schema"]["schema"]["properties"]["label"][
        "enum"] == ["up", "down"]
    joined = ITEMS.with_columns(outcome=pl.lit("succeeded"),
                                content=pl.Series(['{"label": "happy"}', '{"label": "angry"}']))
    rows = declared.to_spec().build_outputs(joined, declared.settings())
    assert rows.to_dicts() == [{"document_id": "d1", "mood": "happy", "gold": "positive"},
                               {"document_id": "d2", "mood": None, "gold": None}]


def test_responses_and_embeddings_bodies() -> None:
    responses = PipelineDeclaration.model_validate(declaration(
        endpoint="/v1/responses", labels=[], answer_schema={"type": "object", "properties": {"n": {"type": "integer"}},
                                                            "required": ["n"], "additionalProperties": False},
        output={"table": "document_counts", "columns": [{"name": "document_id", "value": "item_id"},
                                                        {"name": "n", "value": "answer.n", "type": "BIGINT"}]},
        checks=[]))
    [body, _] = bodies(responses)
    assert (body["instructions"], body["input"], body["max_output_tokens"]) == ("Label the mood.",
                                                                                "Review: Loved it.", 20)
    assert body["text"]["format"]["schema"]["properties"] == {"n": {"type": "integer"}}
    joined = ITEMS.with_columns(outcome=pl.lit("succeeded"), content=pl.Series(['{"n": 3}', '{"n": "many"}']))
    assert responses.to_spec().build_outputs(joined, responses.settings())["n"].to_list() == [3, None]
    embeddings = PipelineDeclaration.model_validate(declaration(
        endpoint="/v1/embeddings", prompt="", max_tokens=None, labels=[], dimensions=64, input="{text}",
        output={"table": "document_vectors", "columns": [{"name": "document_id", "value": "item_id"},
                                                         {"name": "vector", "value": "embedding"},
                                                         {"name": "dims", "value": "dims"}]},
        checks=[]))
    assert bodies(embeddings)[0] == {"model": "gpt-4o-mini", "input": "Loved it.", "dimensions": 64}
    assert embeddings.to_spec().output_schema == {"month": "DATE", "document_id": "VARCHAR", "vector": "FLOAT[]",
                                                  "dims": "INTEGER"}


def test_declared_checks_read_the_month_of_the_output_table(tmp_path: Path) -> None:
    from batch_assets import warehouse

    spec = PipelineDeclaration.model_validate(declaration()).to_spec()
    month = date(2024, 3, 1)
    con = warehouse.connect(tmp_path / "w.duckdb", tables=[spec.output_table_declaration()])
    warehouse.replace_partition(con, "document_moods", month, pl.DataFrame({
        "document_id": ["a", "b", "c"], "mood": ["happy", None, "sad"], "gold": ["happy", "sad", "happy"]}))
    outcomes = {check.name: check.run(con, month) for check in spec.checks}
    assert outcomes["moods_valid"] == CheckOutcome(False, {"rows": 3, "missing": 1}, "1 of 3 rows have no mood")
    accuracy = outcomes["mood_accuracy"]
    assert not accuracy.passed and accuracy.metadata["accuracy"] == pytest.approx(1 / 3, abs=1e-3)  # chance is 1/2
    con.close()


def custom_check(con: duckdb.DuckDBPyConnection, month: date) -> CheckOutcome:
    return CheckOutcome(True, {"month": str(month)})


def test_a_check_function_is_named_by_its_dotted_path() -> None:
    spec = PipelineDeclaration.model_validate(declaration(checks=[
        {"name": "custom", "function": f"{__name__}.custom_check"}])).to_spec()
    [check] = spec.checks
    assert check.run(duckdb.connect(), date(2024, 3, 1)).metadata == {"month": "2024-03-01"}


@pytest.mark.parametrize(("changes", "message"), [
    ({"input": "Review: {body}"}, "{body} must name a column of raw_documents"),
    ({"input": "{text:>10}"}, "without a format"),
    ({"name": "Moods"}, "lower-case letters"),
    ({"endpoint": "/v1/embeddings"}, "an embeddings pipeline takes no prompt, max_tokens, labels"),
    ({"labels": [], "checks": []}, "value label needs labels"),
    ({"answer_schema": {"type": "object", "properties": {}}}, "labels .* or answer_schema, not both"),
    ({"endpoint": "/v1/responses", "max_tokens": 8}, "max_output_tokens must be an int >= 16"),
    ({"endpoint": "/v1/responses", "seed": 1}, "the Responses API takes no seed"),
    ({"output": {"table": "document_labels", "columns": [{"name": "document_id", "value": "item_id"}]},
      "checks": []}, "document_labels is a table the warehouse ships"),
    ({"output": {"table": "t", "columns": [{"name": "mood", "value": "label"}]}, "checks": []},
     "add a column with value item_id"),
    ({"output": {"table": "t", "columns": [{"name": "x", "value": "answer.score"}]}, "checks": []},
     "unknown value|add a column"),
    ({"output": {"table": "t", "columns": [{"name": "document_id", "value": "item_id"},
                                           {"name": "v", "value": "embedding"}]}, "checks": []},
     "only an embeddings answer has embedding"),
    ({"output": {"table": "t", "columns": [{"name": "document_id", "value": "item_id"},
                                           {"name": "x", "value": "source.revenue_usd"}]}, "checks": []},
     "raw_documents has no column 'revenue_usd'"),
    ({"checks": [{"name": "c", "not_null": "nope"}]}, r"\['nope'\] are not columns of document_moods"),
    ({"checks": [{"name": "c"}]}, "give exactly one of not_null, accuracy, function"),
    ({"build_requests": "batch_assets.nowhere.build"}, "cannot import batch_assets.nowhere"),
    ({"build_outputs": "batch_assets.pipelines.catalog.no_such_builder"}, "has no function 'no_such_builder'"),
    ({"surprise": 1}, "Extra inputs are not permitted"),
])
def test_a_wrong_declaration_fails_at_load_saying_what_to_change(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineDeclaration.model_validate(declaration(**changes))


def test_the_declaration_round_trips_through_json() -> None:
    declared = PipelineDeclaration.model_validate(declaration())
    again = PipelineDeclaration.model_validate(orjson.loads(declared.model_dump_json()))
    assert again.to_spec().output_schema == declared.to_spec().output_schema

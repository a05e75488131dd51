"""A fourth pipeline is one YAML declaration (the README's `titles`, batch_assets/defs/titles/defs.yaml): its
component gives it assets and checks, the platform its jobs and a place in the batch sensor."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import polars as pl
import pytest
import yaml

from batch_assets.batching.prepare import prepare_responses_requests
from batch_assets.batching.request_files import PreparedRequest
from batch_assets.definitions import defs as code_location
from batch_assets.defs.definitions import build_definitions
from batch_assets.defs.pipeline_component import PipelineComponent, PipelineScaffolder
from batch_assets.pipelines.catalog import PIPELINES
from batch_assets.pipelines.spec import PipelineSettings, PipelineSpec
from batch_assets.settings import PlatformSettings
from batch_assets_tests.defs.conftest import Platform, make_platform

ROOT = Path(__file__).resolve().parents[2]


def titles_component() -> PipelineComponent:
    """The README's pipeline, loaded from the defs folder as the code location loads it."""
    return dg.ComponentTree.for_project(ROOT).load_component("titles", PipelineComponent)


def with_pipelines(platform: Platform, *extra: PipelineSpec) -> Platform:
    return Platform(build_definitions(platform.settings, pipelines=(*PIPELINES, *extra)), platform.instance,
                    platform.settings)


def test_the_code_location_loads_every_pipeline_of_the_defs_folder_without_lifecycle_warnings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path))
    with warnings.catch_warnings():
        for category in (dg.PreviewWarning, dg.SupersessionWarning, dg.BetaWarning):  # a new user saw these
            warnings.simplefilter("error", category)
        loaded = code_location()
        build_definitions(PlatformSettings.from_env())
    graph = loaded.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    for name, table in [("embeddings", "document_embeddings"), ("sentiment", "document_labels"),
                        ("reports", "monthly_reports"), ("titles", "document_titles")]:
        assert {f"{name}_requests", f"{name}_batches", f"{name}_results", table} <= keys
        assert loaded.resolve_job_def(f"{name}_submit") and loaded.resolve_job_def(f"{name}_collect")
    titles = graph.get(dg.AssetKey("titles_requests"))
    assert titles.group_name == "titles" and {"openai", "polars"} <= set(titles.kinds)
    assert titles.partitions_def is not None
    assert dg.AssetKey("titles_requests") in loaded.resolve_job_def("submit_month").asset_layer.selected_asset_keys
    columns = graph.get(dg.AssetKey("document_titles")).metadata["dagster/column_schema"].columns
    assert [(c.name, c.type) for c in columns] == [("month", "DATE"), ("document_id", "VARCHAR"),
                                                   ("title", "VARCHAR"), ("model", "VARCHAR"),
                                                   ("batch_id", "VARCHAR")]
    # The warehouse resource carries the declared table; nothing global learnt about it.
    [declared] = loaded.resources["warehouse_db"].output_tables
    assert (declared.name, declared.key) == ("document_titles", ["month", "document_id"])
    # The README's lineage link expands exactly the code location's groups (the UI opens them collapsed).
    [expanded] = re.findall(r"\(http://127\.0\.0\.1:3000/asset-groups\?expanded=([^)\s]+)\)",
                            (ROOT / "README.md").read_text())
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert sorted(expanded.split(",")) == sorted(f"global@global:{group}" for group in groups)


def test_the_code_location_without_an_openai_key_says_what_to_set(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BATCH_ASSETS_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(Exception, match="platform.py") as raised:  # Dagster names the component that failed
        code_location()
    assert "set OPENAI_API_KEY" in str(raised.value.__cause__)


def test_the_yaml_pipeline_runs_end_to_end_through_the_responses_api(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    platform = with_pipelines(make_platform(tmp_path, monkeypatch, models="fake"),
                              titles_component().declaration.to_spec())
    submitted = platform.run_job("titles_submit")
    [planned] = [m for m in submitted.get_asset_materialization_events()
                 if m.asset_key == dg.AssetKey("titles_requests")]
    [request_file] = planned.materialization.metadata["request_files"].value
    line = orjson.loads(Path(request_file).read_text().splitlines()[0])
    assert line["url"] == "/v1/responses"
    assert line["body"]["text"]["format"]["type"] == "json_schema" and line["body"]["max_output_tokens"] == 32
    assert line["body"]["instructions"].startswith("Give this movie review a short title")
    assert [r.job_name for r in platform.drive_sensor()] == ["titles_collect"]
    assert platform.query("SELECT count(*), count(title), min(title) FROM document_titles") == [(6, 6, "fake")]
    [collect] = platform.collect_runs
    checks = {c.check_name: c.passed for c in collect.get_asset_check_evaluations()}
    assert checks == {"titles_present": True, "items_accounted_for": True, "final_failure_share": True}


def prefixed_title_requests(items: pl.DataFrame, settings: PipelineSettings) -> Iterator[PreparedRequest]:
    """A custom row builder, named in YAML by its dotted path (the escape hatch)."""
    return prepare_responses_requests(items["item_id"].to_list(), [f"Title: {t}" for t in items["text"]],
                                      settings.model, max_output_tokens=settings.max_tokens,
                                      custom_id_prefix="title-")


def test_a_custom_row_builder_named_in_yaml_still_maps_every_answer_to_its_item(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    attributes: dict[str, Any] = {
        **titles_component().declaration.model_dump(exclude={"answer_schema"}),
        "build_requests": f"{__name__}.prefixed_title_requests",
        "output": {"table": "document_titles", "columns": [
            {"name": "document_id", "value": "item_id"}, {"name": "answer", "value": "answer"}]},
        "checks": [],
    }
    spec = PipelineComponent.resolve_from_dict(attributes).declaration.to_spec()
    platform = with_pipelines(make_platform(tmp_path, monkeypatch, models="fake"), spec)
    platform.run_job("titles_submit")
    platform.drive_sensor()
    assert platform.query("SELECT count(*), count(answer) FROM document_titles") == [(6, 6)]
    assert platform.query("SELECT bool_and(starts_with(custom_id, 'title-')) FROM batch_requests") == [(True,)]


def test_dg_scaffold_writes_a_classifier_that_runs_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "review-moods"
    folder.mkdir()
    PipelineScaffolder().scaffold(dg.ScaffoldRequest(
        type_name=f"{PipelineComponent.__module__}.PipelineComponent", target_path=folder, scaffold_format="yaml",
        project_root=ROOT, params=None))
    written = yaml.safe_load((folder / "defs.yaml").read_text())
    assert written["type"] == "batch_assets.defs.pipeline_component.PipelineComponent"
    spec = PipelineComponent.resolve_from_dict(written["attributes"]).declaration.to_spec()
    platform = with_pipelines(make_platform(tmp_path, monkeypatch, models="fake"), spec)
    platform.run_job("review_moods_submit")
    platform.drive_sensor()
    assert platform.query("SELECT count(*), count(label), count(gold_label) FROM review_moods_rows") == [(6, 6, 6)]
    checks = {c.check_name for run in platform.collect_runs for c in run.get_asset_check_evaluations()}
    assert "review_moods_accuracy" in checks


def test_two_pipelines_with_one_name_fail_at_load_saying_which(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path))
    titles = titles_component().declaration.to_spec()
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="two pipelines have the name titles"):
        build_definitions(PlatformSettings.from_env(), pipelines=(*PIPELINES, titles, titles))


@pytest.mark.e2e
def test_the_yaml_pipeline_on_the_real_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = with_pipelines(make_platform(tmp_path, monkeypatch, models="real", docs_per_month=3),
                              titles_component().declaration.to_spec())
    platform.run_job("titles_submit")
    assert [r.job_name for r in platform.drive_sensor()] == ["titles_collect"]
    rows = platform.query("SELECT model, title FROM document_titles")
    assert len(rows) == 3 and {model for model, _ in rows} == {"local/SmolLM2-135M-Instruct"}
    # The JSON schema constrains the answer: each is an object with a title (demo-grade wording).
    assert all(title for _, title in rows), rows

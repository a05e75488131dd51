"""A fourth pipeline is one declaration: the factory gives it assets, jobs and a place in the sensor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest

from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL
from batch_assets.batching.request_files import prepare_chat_requests
from batch_assets.defs.definitions import build_definitions
from batch_assets.pipelines.catalog import PIPELINES
from batch_assets.pipelines.spec import PipelineSettings, PipelineSpec
from batch_assets.settings import PlatformSettings
from batch_assets_tests.defs.conftest import Platform, make_platform

# The README shows this declaration.
TITLES = PipelineSpec(
    name="titles",
    description="Suggests a short title for each document.",
    endpoint=CHAT_COMPLETIONS_URL,
    source="raw_documents",
    item_id_column="id",
    output_table="document_titles",
    output_columns={"document_id": "raw_documents.id", "title": "suggested title"},
    output_schema={"month": "DATE", "document_id": "VARCHAR", "title": "VARCHAR"},
    output_key=("month", "document_id"),
    defaults=PipelineSettings(model="gpt-4o-mini", system_prompt="Suggest a five-word title.", max_tokens=12),
    build_requests=lambda items, s: prepare_chat_requests(
        items["item_id"].to_list(),
        [[{"role": "system", "content": s.system_prompt}, {"role": "user", "content": t}] for t in items["text"]],
        s.model, max_tokens=s.max_tokens),
    build_outputs=lambda joined, s: joined.filter(pl.col("outcome") == "succeeded").select(
        pl.col("item_id").alias("document_id"), pl.col("content").alias("title")),
)


def test_factory_builds_four_assets_and_two_jobs_per_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path))
    defs = build_definitions(PlatformSettings.from_env(), pipelines=(*PIPELINES, TITLES))
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    for name, table in [("embeddings", "document_embeddings"), ("sentiment", "document_labels"),
                        ("reports", "monthly_reports"), ("titles", "document_titles")]:
        assert {f"{name}_requests", f"{name}_batches", f"{name}_results", table} <= keys
        assert defs.resolve_job_def(f"{name}_submit") and defs.resolve_job_def(f"{name}_collect")
    node = graph.get(next(k for k in graph.get_all_asset_keys() if k.to_user_string() == "sentiment_requests"))
    assert node.group_name == "sentiment" and {"openai", "polars"} <= set(node.kinds)
    assert node.partitions_def is not None


def test_a_fourth_pipeline_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = make_platform(tmp_path, monkeypatch, models="fake")
    platform = Platform(build_definitions(platform.settings, pipelines=(*PIPELINES, TITLES)), platform.instance,
                        platform.settings)
    platform.run_job("titles_submit")
    assert [r.job_name for r in platform.drive_sensor()] == ["titles_collect"]
    assert platform.query("SELECT count(*), count(title) FROM document_titles") == [(6, 6)]


def test_a_builder_with_a_custom_id_prefix_still_maps_every_answer_to_its_item(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    prefixed = dataclasses.replace(TITLES, build_requests=lambda items, s: prepare_chat_requests(
        items["item_id"].to_list(),
        [[{"role": "user", "content": t}] for t in items["text"]], s.model, max_tokens=s.max_tokens,
        custom_id_prefix="title-"))
    platform = make_platform(tmp_path, monkeypatch, models="fake")
    platform = Platform(build_definitions(platform.settings, pipelines=(*PIPELINES, prefixed)), platform.instance,
                        platform.settings)
    platform.run_job("titles_submit")
    platform.drive_sensor()
    assert platform.query("SELECT count(*), count(title) FROM document_titles") == [(6, 6)]
    assert platform.query("SELECT bool_and(starts_with(custom_id, 'title-')) FROM batch_requests") == [(True,)]

"""Each asset, job and config path of the platform, on the local engine with fake models (fast)."""

from __future__ import annotations

from datetime import UTC

import dagster as dg
import polars as pl
import pytest

from batch_assets.defs.definitions import build_definitions
from batch_assets.provider import ProviderError
from batch_assets.settings import PlatformSettings
from batch_assets_tests.defs.conftest import MONTH, Platform


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_sources_land_in_the_warehouse(fake_platform: Platform) -> None:
    result = fake_platform.run_job("submit_month")
    assert _metadata(result, "raw_documents")["dagster/row_count"] == 6
    assert _metadata(result, "company_metrics")["dagster/row_count"] == 5
    assert fake_platform.query("SELECT count(*), min(month), max(month) FROM raw_documents") == [
        (6, pl.Series([MONTH]).str.to_date()[0], pl.Series([MONTH]).str.to_date()[0])]


def test_requests_carry_exact_tokens_and_cost_estimates(fake_platform: Platform) -> None:
    result = fake_platform.run_job("sentiment_submit")
    requests = _metadata(result, "sentiment_requests")
    assert requests["requests"] == 6 and requests["files"] == 1 and requests["input_tokens"] > 6 * 20
    assert requests["requested_model"] == "gpt-4o-mini"
    assert requests["estimated_batch_usd"] == pytest.approx(requests["estimated_standard_usd"] / 2)
    assert requests["estimated_saving_usd"] > 0
    batches = _metadata(result, "sentiment_batches")
    assert len(batches["batch_ids"]) == 1 and batches["provider"] == "local" and batches["adopted"] == 0


def test_submitting_a_month_in_flight_again_pays_nothing_twice(fake_platform: Platform) -> None:
    first = _metadata(fake_platform.run_job("embeddings_submit"), "embeddings_batches")
    again = fake_platform.run_job("embeddings_submit")
    assert "in flight" in _metadata(again, "embeddings_requests")["summary"]
    assert _metadata(again, "embeddings_batches")["batch_ids"] == first["batch_ids"]
    assert _metadata(again, "embeddings_batches")["created"] == 0


def test_a_month_of_every_pipeline_reaches_duckdb(fake_platform: Platform) -> None:
    fake_platform.run_job("submit_month")
    requested = fake_platform.drive_sensor()
    assert sorted(r.job_name for r in requested) == ["embeddings_collect", "reports_collect", "sentiment_collect"]
    assert {r.partition_key for r in requested} == {MONTH}
    assert fake_platform.query("SELECT count(*), min(dims) FROM document_embeddings") == [(6, 384)]
    labels = fake_platform.query("SELECT label FROM document_labels")
    assert len(labels) == 6 and {label for (label,) in labels} <= {"positive", "negative", "neutral"}
    assert fake_platform.query("SELECT count(*) FROM monthly_reports") == [(5,)]
    outcomes = fake_platform.query("SELECT pipeline, outcome, count(*) FROM batch_outcomes GROUP BY ALL ORDER BY 1")
    assert outcomes == [("embeddings", "succeeded", 6), ("reports", "succeeded", 5), ("sentiment", "succeeded", 6)]
    costs = fake_platform.query("SELECT pipeline, requests, prompt_tokens > 0, batch_usd FROM batch_costs ORDER BY 1")
    assert costs == [("embeddings", 6, True, 0.0), ("reports", 5, True, 0.0), ("sentiment", 6, True, 0.0)]
    sentiment_run = next(r for r in fake_platform.collect_runs if r.job_def.name == "sentiment_collect")
    checks = {e.check_name: e for e in sentiment_run.get_asset_check_evaluations()}
    assert set(checks) == {"label_accuracy", "labels_valid", "items_accounted_for", "final_failure_share"}
    assert checks["labels_valid"].passed and checks["items_accounted_for"].passed
    assert checks["label_accuracy"].metadata["documents_with_gold_label"].value == 6
    assert {e.partition for e in checks.values()} == {MONTH}  # a month's result does not hide another's
    assert "| positive |" in checks["label_accuracy"].metadata["confusion_table"].value


def test_rematerializing_a_month_replaces_its_rows(fake_platform: Platform) -> None:
    for _ in range(2):
        fake_platform.run_job("reports_submit")
        fake_platform.drive_sensor()
    assert fake_platform.query("SELECT count(*) FROM monthly_reports") == [(5,)]
    assert fake_platform.query("SELECT count(*) FROM batch_outcomes") == [(5,)]


def test_launchpad_config_changes_model_settings(fake_platform: Platform) -> None:
    config = {"ops": {"embeddings_requests": {"config": {"dimensions": 64, "model": "text-embedding-3-large"}}}}
    result = fake_platform.run_job("embeddings_submit", run_config=config)
    assert _metadata(result, "embeddings_requests")["requested_model"] == "text-embedding-3-large"
    fake_platform.drive_sensor()
    assert fake_platform.query("SELECT DISTINCT dims FROM document_embeddings") == [(64,)]


def test_results_record_actual_usage(fake_platform: Platform) -> None:
    fake_platform.run_job("sentiment_submit")
    fake_platform.drive_sensor()
    [run] = fake_platform.collect_runs
    results = _metadata(run, "sentiment_results")
    assert results["outcome_succeeded"] == 6 and results["prompt_tokens"] > 0
    assert results["actual_batch_usd"] == 0.0  # local models are free
    # what the same tokens would cost on the requested OpenAI model
    assert results["openai_equivalent_batch_usd"] > 0
    assert results["openai_equivalent_batch_usd"] == pytest.approx(results["openai_equivalent_standard_usd"] / 2)


def test_missing_openai_key_fails_at_load_with_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="set OPENAI_API_KEY"):
        build_definitions(PlatformSettings.from_env())
    monkeypatch.setenv("BATCH_ASSETS_PROVIDER", "anthropic")
    with pytest.raises(ProviderError, match="'local'"):
        PlatformSettings.from_env()


def test_openai_provider_reads_the_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_ASSETS_PROVIDER", "openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    defs = build_definitions(PlatformSettings.from_env())
    resource = defs.resources["batch_api"]
    assert resource.provider == "openai"
    assert "sk-test-not-real" not in repr(resource)  # an EnvVar, resolved at run time
    schedule = defs.resolve_schedule_def("monthly_reports_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # nobody pays by accident


def test_monthly_reports_schedule_submits_the_previous_month(fake_platform: Platform) -> None:
    from datetime import datetime

    schedule = fake_platform.defs.resolve_schedule_def("monthly_reports_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING  # free on the local engine
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2024, 4, 1, 2, tzinfo=UTC))
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2024-03-01" and schedule.job_name == "reports_submit"


def test_a_month_without_documents_still_completes(fake_platform: Platform) -> None:
    empty_month = "2025-06-01"  # the bundled reviews cover 2024
    submitted = fake_platform.run_job("embeddings_submit", partition=empty_month)
    assert "bundled reviews cover 2024-01 to 2024-12" in _metadata(submitted, "raw_documents")["note"]
    [request] = fake_platform.drive_sensor()
    assert request.partition_key == empty_month
    assert fake_platform.query("SELECT count(*) FROM batch_outcomes") == [(0,)]
    [run] = fake_platform.collect_runs
    assert _metadata(run, "document_embeddings")["dagster/row_count"] == 0


def test_file_limits_are_run_config(fake_platform: Platform) -> None:
    config = {"ops": {"sentiment_requests": {"config": {"max_requests_per_file": 4}}}}
    result = fake_platform.run_job("sentiment_submit", run_config=config)
    assert _metadata(result, "sentiment_requests")["files"] == 2  # 6 documents, at most 4 per file
    assert len(_metadata(result, "sentiment_batches")["batch_ids"]) == 2
    fake_platform.drive_sensor()
    assert fake_platform.query("SELECT count(*), count(DISTINCT batch_id) FROM document_labels") == [(6, 2)]


def test_the_batch_api_client_is_made_once_per_run_and_closed_after_it(fake_platform: Platform) -> None:
    with dg.build_resources({"batch_api": fake_platform.defs.resources["batch_api"]}) as resources:
        client = resources.batch_api.client()
        assert resources.batch_api.client() is client  # one client (and one local state store) per run
        client.list()
    assert client.openai.is_closed()

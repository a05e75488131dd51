"""One month of every pipeline on the real local engine, through Dagster: materialize, sensor ticks, collect runs."""

from __future__ import annotations

import pytest

from batch_assets_tests.defs.conftest import MONTH, Platform

pytestmark = pytest.mark.e2e


def test_one_month_of_each_pipeline_on_the_real_engine(real_platform: Platform) -> None:
    real_platform.run_job("submit_month")
    requested = real_platform.drive_sensor(timeout=900)
    assert sorted(r.job_name for r in requested) == ["embeddings_collect", "reports_collect", "sentiment_collect"]

    assert real_platform.query(
        "SELECT count(*), min(dims), max(dims), min(model), max(abs(list_dot_product(embedding::FLOAT[], "
        "embedding::FLOAT[]) - 1)) < 1e-3 FROM document_embeddings") == [
        (8, 384, 384, "local/all-MiniLM-L6-v2", True)]
    labels = real_platform.query("SELECT label, gold_label, model FROM document_labels")
    assert len(labels) == 8
    assert all(label in {"positive", "negative", "neutral"} for label, _, _ in labels)  # structured output
    assert {model for _, _, model in labels} == {"local/SmolLM2-135M-Instruct"}
    reports = real_platform.query("SELECT company, length(report), completion_tokens FROM monthly_reports")
    assert len(reports) == 5 and all(length > 50 and tokens > 10 for _, length, tokens in reports)

    assert real_platform.query("SELECT pipeline, count(*) FROM batch_outcomes WHERE outcome = 'succeeded' "
                               "GROUP BY ALL ORDER BY 1") == [("embeddings", 8), ("reports", 5), ("sentiment", 8)]
    costs = real_platform.query("SELECT pipeline, model, requests, prompt_tokens, completion_tokens, batch_usd, "
                                "standard_usd FROM batch_costs ORDER BY 1")
    assert [(c[0], c[1], c[2]) for c in costs] == [
        ("embeddings", "local/all-MiniLM-L6-v2", 8), ("reports", "local/SmolLM2-135M-Instruct", 5),
        ("sentiment", "local/SmolLM2-135M-Instruct", 8)]
    assert all(c[3] > 0 and c[5] == 0.0 and c[6] == 0.0 for c in costs)  # real usage, local models are free
    assert costs[1][4] > 0 and costs[2][4] > 0  # chat pipelines report completion tokens

    sentiment_run = next(r for r in real_platform.collect_runs if r.job_def.name == "sentiment_collect")
    accuracy = next(e for e in sentiment_run.get_asset_check_evaluations() if e.check_name == "label_accuracy")
    assert 0.0 <= accuracy.metadata["accuracy"].value <= 1.0
    assert accuracy.metadata["documents_with_gold_label"].value == 8
    assert MONTH == requested[0].partition_key


def test_search_finds_documents_embedded_on_the_real_engine(real_platform: Platform,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from batch_assets.cli import main
    from batch_assets.search import search

    real_platform.run_job("embeddings_submit")
    real_platform.drive_sensor(timeout=300)
    [(document_id, text)] = real_platform.query("SELECT id, text FROM raw_documents ORDER BY id LIMIT 1")
    hits = search(text, month="2024-03", k=3)
    assert hits.height == 3 and hits["score"].is_sorted(descending=True)
    assert hits["document_id"][0] == document_id and hits["score"][0] > 0.99  # a document finds itself
    assert main(["search", text, "-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and document_id in printed[0]

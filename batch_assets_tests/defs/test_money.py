"""Money under control, on the real local engine: caps refuse before any upload, files over the enqueued-token
limit go out in waves, a batch refused for the limit anyway is queued again, identical requests are answered
from the cache, and `batch-assets costs` shows the spend."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from batch_assets.cli import main
from batch_assets.defs.resources import BatchAPIResource
from batch_assets.ledger.records import FileState
from batch_assets_tests.defs.conftest import MONTH, Platform, make_platform

pytestmark = pytest.mark.e2e


def _real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs: int = 6, **env: str) -> Platform:
    return make_platform(tmp_path, monkeypatch, models="real", docs_per_month=docs, **env)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [m for m in result.get_asset_materialization_events() if m.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _batches_at_provider(platform: Platform) -> list:
    resource = platform.defs.resources["batch_api"]
    assert isinstance(resource, BatchAPIResource)
    return list(resource.client().list())


def test_a_cap_refuses_the_submission_before_any_upload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, BATCH_ASSETS_MAX_COST_PER_SUBMISSION_USD="0.00001")
    result = platform.defs.resolve_job_def("sentiment_submit").execute_in_process(
        partition_key=MONTH, instance=platform.instance, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.event_specific_data.error.message  # type: ignore[union-attr]
    assert "may cost up to $" in message and "over the per-submission cap of $0.00001" in message
    assert "max_cost_per_submission_usd" in message and "BATCH_ASSETS_MAX_COST_PER_SUBMISSION_USD" in message
    assert _batches_at_provider(platform) == []  # nothing uploaded, nothing created
    resource = platform.defs.resources["batch_api"]
    assert list(resource.client().openai.files.list()) == []  # type: ignore[union-attr]
    with platform.ledger() as ledger:
        assert ledger.files() == []
    # Raised in the launchpad, the same month goes through.
    platform.run_job("sentiment_submit", run_config={"ops": {"sentiment_requests": {"config": {
        "max_cost_per_submission_usd": 1.0}}}})
    assert len(_batches_at_provider(platform)) == 1


def test_the_monthly_cap_counts_every_pipeline_of_the_month(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, BATCH_ASSETS_MAX_COST_PER_MONTH_USD="0.0004")
    platform.run_job("sentiment_submit")  # fits alone (its upper bound is about $0.0003)
    result = platform.defs.resolve_job_def("reports_submit").execute_in_process(
        partition_key=MONTH, instance=platform.instance, raise_on_error=False)
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.message  # type: ignore[union-attr]
    assert "the month already stands for $" in message and "over the monthly cap of $0.0004" in message


def test_files_over_the_enqueued_token_limit_go_out_in_waves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The local engine refuses a batch past 200 enqueued tokens, as OpenAI does; the platform knows that limit.
    platform = _real(tmp_path, monkeypatch, docs=12, BATCH_ASSETS_ENQUEUED_TOKEN_LIMITS="text-embedding-3-small=200",
                     BATCH_ASSETS_LOCAL_ENQUEUED_TOKEN_LIMIT="200")
    first = platform.run_job("embeddings_submit")
    requests = _metadata(first, "embeddings_requests")
    assert requests["files"] >= 3  # split under the limit
    assert _metadata(first, "embeddings_batches")["queued_files"] >= 1
    requested = platform.drive_sensor(timeout=300)
    with platform.ledger() as ledger:
        files = ledger.files()
    assert {f.state for f in files} == {FileState.COLLECTED}
    assert all(f.tries == 1 and f.error_code is None for f in files)  # never refused by the provider
    assert all(b.status == "completed" for b in _batches_at_provider(platform))
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(12,)]
    assert any(r.tags.get("batch_assets/reason", "").startswith("queued") for r in requested)


def test_a_batch_refused_for_the_token_limit_is_queued_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The platform does not know the limit here (another tool shares the organisation): the provider refuses.
    # Each file fits alone (at most 258 tokens), no two together.
    platform = _real(tmp_path, monkeypatch, docs=9, BATCH_ASSETS_LOCAL_ENQUEUED_TOKEN_LIMIT="300")
    platform.run_job("embeddings_submit", run_config={
        "ops": {"embeddings_requests": {"config": {"max_requests_per_file": 3}}}})
    platform.drive_sensor(timeout=300)
    with platform.ledger() as ledger:
        files = ledger.files()
    assert len(files) == 3 and {f.state for f in files} == {FileState.COLLECTED}
    assert max(f.tries for f in files) >= 2  # refused once at least, then submitted again
    refused = [b for b in _batches_at_provider(platform) if b.status == "failed"]
    assert refused and all(b.errors.data[0].code == "token_limit_exceeded" for b in refused)  # type: ignore[union-attr]
    assert platform.query("SELECT count(*), count(DISTINCT item_id) FROM batch_outcomes "
                          "WHERE outcome = 'succeeded'") == [(9, 9)]  # nothing dropped


def _documents(tmp_path: Path) -> Path:
    path = tmp_path / "documents.csv"
    path.write_text(
        "id,text,created_at,label\n"
        "m1,A gripping thriller with a twist nobody sees coming.,2024-03-05T10:00:00,positive\n"
        "m2,Flat characters and a plot that goes nowhere.,2024-03-06T10:00:00,negative\n"
        "a1,Flat characters and a plot that goes nowhere.,2024-04-02T10:00:00,negative\n"
        "a2,Two sisters reopen their late father's bakery.,2024-04-03T10:00:00,neutral\n")
    return path


def test_an_identical_request_is_answered_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, BATCH_ASSETS_DOCUMENTS_PATH=str(_documents(tmp_path)))
    platform.run_job("embeddings_submit")
    platform.drive_sensor(timeout=300)
    april = platform.run_job("embeddings_submit", partition="2024-04-01")
    requests = _metadata(april, "embeddings_requests")
    assert requests["cache_hits"] == 1 and requests["requests"] == 1  # a1 repeats m2's text: not paid again
    assert requests["cache_saved_batch_usd"] > 0  # what m2's answer cost at text-embedding-3-small's batch price
    platform.drive_sensor(timeout=300)
    assert platform.query("SELECT sum(requests) FROM batch_costs WHERE month = DATE '2024-04-01'") == [(1,)]
    assert platform.query(
        "SELECT a.embedding = m.embedding FROM document_embeddings a JOIN document_embeddings m "
        "ON a.document_id = 'a1' AND m.document_id = 'm2'") == [(True,)]
    assert platform.query("SELECT count(*) FROM document_embeddings WHERE month = DATE '2024-04-01'") == [(2,)]
    assert platform.query("SELECT source FROM batch_outcomes WHERE item_id = 'a1' AND final") == [("cache",)]
    # Off in the launchpad: every item is submitted (here, with new settings, a new plan of the month).
    off = platform.run_job("embeddings_submit", partition="2024-04-01", run_config={
        "ops": {"embeddings_requests": {"config": {"use_cache": False, "dimensions": 64}}}})
    assert _metadata(off, "embeddings_requests")["cache_hits"] == 0


def test_costs_are_shown_per_month_pipeline_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    platform = _real(tmp_path, monkeypatch, docs=3)
    platform.run_job("embeddings_submit")
    platform.drive_sensor(timeout=300)
    assert main(["costs", "--month", "2024-03"]) == 0
    printed = capsys.readouterr().out
    assert "2024-03  embeddings   local/all-MiniLM-L6-v2" in printed and "$0.00" in printed
    assert main(["costs", "--month", "2023-01"]) == 0
    assert "no batch has been collected for 2023-01 yet" in capsys.readouterr().out

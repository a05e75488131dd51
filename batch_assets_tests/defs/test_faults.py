"""Faults are features: each way a month can go wrong, injected on the real local engine, and what a user checks
afterwards — every item accounted for, nothing paid twice, a message that says what to do.

The matrix (README, "What can go wrong"): item failures · expiry · two submits at once · a lost create response ·
a crash between create and record · requests re-materialized mid-flight · materialize-all · cancel from the CLI ·
run config reaching the output rows · a garbled result line · a full disk while collecting · DuckDB out of
memory while collecting · a crash after collecting, before the ledger knows.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import time
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_assets.batching.client import BatchClient
from batch_assets.batching.results import ResultFileWarning
from batch_assets.cli import main
from batch_assets.defs.resources import BatchAPIResource
from batch_assets.ledger.records import FileState, MonthState
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines import submit as submit_module
from batch_assets.pipelines.submit import IDEMPOTENCY_KEY, submit_month
from batch_assets_tests.defs.conftest import MONTH, Platform, make_platform

pytestmark = pytest.mark.e2e
MARCH = date(2024, 3, 1)


def _real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs: int = 10, **env: str) -> Platform:
    return make_platform(tmp_path, monkeypatch, models="real", docs_per_month=docs, **env)


def _client(platform: Platform) -> BatchClient:
    resource = platform.defs.resources["batch_api"]
    assert isinstance(resource, BatchAPIResource)
    return resource.client()


def _month_state(platform: Platform, pipeline: str = "embeddings") -> MonthState:
    with platform.ledger() as ledger:
        record = ledger.month(pipeline, MONTH)
    assert record is not None
    return record.state


def _collect_requested(platform: Platform) -> dg.RunRequest:
    """The one run the sensor asks for once the month's batches end (ticked as the daemon would)."""
    deadline = time.monotonic() + 120
    while not (requests := platform.tick().run_requests):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    [request] = requests
    return request


def _one_final_outcome_per_item(platform: Platform, pipeline: str = "embeddings") -> None:
    """Every source item of the month has exactly one final outcome, and none succeeded twice."""
    source = "company_metrics" if pipeline == "reports" else "raw_documents"
    key = "company" if pipeline == "reports" else "id"
    assert platform.query(
        f"SELECT count(*) FROM {source} s LEFT JOIN (SELECT item_id, count(*) AS n FROM batch_outcomes "
        f"WHERE pipeline = '{pipeline}' AND final GROUP BY 1) o ON o.item_id = s.{key} WHERE o.n IS DISTINCT FROM 1"
    ) == [(0,)]
    assert platform.query(f"SELECT item_id FROM batch_outcomes WHERE pipeline = '{pipeline}' AND "
                          "outcome = 'succeeded' GROUP BY 1 HAVING count(*) > 1") == []


def test_item_failures_are_retried_until_only_non_retryable_ones_fail(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=12, BATCH_ASSETS_LOCAL_FAILURE_RATE="0.2",
                     BATCH_ASSETS_LOCAL_FAILURE_STATUS_CODES="500,429,400", BATCH_ASSETS_LOCAL_SEED="3")
    platform.run_job("embeddings_submit")
    requested = platform.drive_sensor(timeout=300)
    assert any(r.job_name == "embeddings_resubmit" for r in requested)  # retried without a click
    _one_final_outcome_per_item(platform)
    failed = platform.query("SELECT outcome, status_code FROM batch_outcomes WHERE final AND outcome <> 'succeeded'")
    tries = dict(platform.query("SELECT item_id, count(*) FROM batch_requests WHERE source = 'submitted' "
                                "GROUP BY 1"))
    assert failed, "the seed should leave some item failing for good"
    assert all(status == 400 for _, status in failed)  # only non-retryable ones
    assert max(tries.values()) <= 3
    assert _month_state(platform) == MonthState.DONE_WITH_FAILURES
    collect = [r for r in platform.collect_runs if r.job_def.name == "embeddings_collect"][-1]
    checks = {e.check_name: e for e in collect.get_asset_check_evaluations()}
    assert checks["items_accounted_for"].passed
    assert checks["items_accounted_for"].metadata["items_by_state"].value["unaccounted"] == 0
    assert not checks["final_failure_share"].passed  # 400s above the 5% threshold: the check says so


def test_expiry_resubmits_only_the_unfinished_items(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=10, BATCH_ASSETS_LOCAL_EXPIRE_AFTER_ITEMS="4")
    platform.run_job("embeddings_submit")
    platform.drive_sensor(timeout=300)
    per_attempt = platform.query("SELECT attempt, count(*) FROM batch_requests WHERE source = 'submitted' "
                                 "GROUP BY 1 ORDER BY 1")
    assert per_attempt == [(1, 10), (2, 6), (3, 2)]  # 4 answered per attempt, the rest expired
    _one_final_outcome_per_item(platform)
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE outcome = 'succeeded'") == [(10,)]
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(10,)]
    assert _month_state(platform) == MonthState.DONE


def _submit_in_another_process(data_dir: str, ledger_url: str, barrier: Any, created: Any) -> None:
    import os

    os.environ.update(BATCH_ASSETS_DATA_DIR=data_dir, BATCH_ASSETS_LOCAL_MODELS="real")
    from batch_assets.batches_cli import batch_client
    from batch_assets.ledger.store import Ledger
    from batch_assets.settings import PlatformSettings

    barrier.wait()
    with Ledger(ledger_url) as ledger:
        created.put(submit_month(batch_client(PlatformSettings.from_env()), ledger, "embeddings", MARCH).created)


def test_two_submits_at_once_create_one_batch_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=8)
    platform.run_job("embeddings_submit", run_config={
        "ops": {"embeddings_requests": {"config": {"max_requests_per_file": 3}}}},
        asset_selection=[dg.AssetKey("raw_documents"), dg.AssetKey("embeddings_requests")])
    context = multiprocessing.get_context("spawn")
    barrier, created = context.Barrier(2), context.Queue()
    runs = [context.Process(target=_submit_in_another_process, args=(
        str(tmp_path / "data"), platform.settings.ledger_url, barrier, created)) for _ in range(2)]
    for run in runs:
        run.start()
    counts = [created.get(timeout=120) for _ in runs]
    for run in runs:
        run.join(timeout=60)
    assert sum(counts) == 3  # 3 files, one batch each, whoever created them
    at_provider = [b for b in _client(platform).list() if (b.metadata or {}).get("pipeline") == "embeddings"]
    assert len(at_provider) == 3
    assert len({b.metadata[IDEMPOTENCY_KEY] for b in at_provider}) == 3
    platform.drive_sensor(timeout=300)
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(8,)]


def test_a_lost_create_response_still_makes_one_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=4, BATCH_ASSETS_LOCAL_LOSE_CREATE_RESPONSES="1")
    result = platform.run_job("embeddings_submit")
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("embeddings_batches")]
    assert event.materialization.metadata["adopted"].value == 1  # found by its key, not created again
    assert len(list(_client(platform).list())) == 1
    platform.drive_sensor(timeout=300)
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(4,)]


def test_a_crash_between_create_and_record_adopts_on_the_next_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=4)
    real_record = submit_module._record

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("the run process died right after the create")

    monkeypatch.setattr(submit_module, "_record", crash)
    with pytest.raises(SystemExit):
        platform.run_job("embeddings_submit")
    monkeypatch.setattr(submit_module, "_record", real_record)
    with platform.ledger() as ledger:
        [stored] = ledger.files(pipeline="embeddings")
    assert stored.state == FileState.SUBMITTING and stored.batch_id is None
    result = platform.run_job("embeddings_resubmit")
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key == dg.AssetKey("embeddings_batches")]
    assert event.materialization.metadata["adopted"].value == 1
    assert len(list(_client(platform).list())) == 1
    platform.drive_sensor(timeout=300)
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(4,)]


def test_requests_rematerialized_mid_flight_drop_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=12, BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS="0.2")
    platform.run_job("embeddings_submit")
    # A user previews the estimate for another model while the batch runs, twice (two runs in a row).
    for _ in range(2):
        preview = platform.run_job("embeddings_submit", run_config={
            "ops": {"embeddings_requests": {"config": {"model": "text-embedding-3-large"}}}},
            asset_selection=[dg.AssetKey("embeddings_requests")])
        [event] = preview.get_asset_materialization_events()
        assert "in flight" in event.materialization.metadata["summary"].value
    platform.drive_sensor(timeout=300)
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE outcome = 'succeeded'") == [(12,)]
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(12,)]


def test_materialize_all_succeeds_and_the_sensor_finishes_the_month(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=4, BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS="0.5")
    everything = platform.defs.get_implicit_global_asset_job_def()
    result = everything.execute_in_process(partition_key=MONTH, instance=platform.instance)
    assert result.success  # no red run for a normal wait
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert {"document_embeddings", "document_labels", "monthly_reports"} <= skipped
    assert _month_state(platform) == MonthState.WAITING
    requested = platform.drive_sensor(timeout=600)
    assert {r.job_name for r in requested} == {"embeddings_collect", "sentiment_collect", "reports_collect"}
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(4,)]
    assert platform.query("SELECT count(*) FROM monthly_reports") == [(5,)]
    for pipeline in ("embeddings", "sentiment", "reports"):
        assert _month_state(platform, pipeline) == MonthState.DONE


def test_cancel_from_the_cli_keeps_finished_items_and_retries_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    platform = _real(tmp_path, monkeypatch, docs=10, BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS="0.4")
    platform.run_job("embeddings_submit")
    client = _client(platform)
    deadline = time.monotonic() + 60
    while True:
        [batch] = list(client.list())
        if batch.request_counts and batch.request_counts.completed >= 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert main(["batches", "status"]) == 0
    assert "embeddings 2024-03  waiting" in capsys.readouterr().out
    assert main(["batches", "cancel", "--pipeline", "embeddings", "--month", "2024-03"]) == 0
    assert "nothing of this month is retried" in capsys.readouterr().out
    requested = platform.drive_sensor(timeout=120)
    assert [r.job_name for r in requested] == ["embeddings_collect"]  # collected, not resubmitted
    outcomes = dict(platform.query("SELECT outcome, count(*) FROM batch_outcomes GROUP BY 1"))
    assert outcomes.get("succeeded", 0) >= 2 and outcomes.get("cancelled", 0) >= 1
    assert sum(outcomes.values()) == 10
    _one_final_outcome_per_item(platform)
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(outcomes["succeeded"],)]
    assert _month_state(platform) == MonthState.CANCELLED
    assert main(["batches", "status", "--all"]) == 0  # a finished month says what its items became, not 0/0
    assert (f"embeddings 2024-03  cancelled  attempt 1  10/10 requests ended ({outcomes['cancelled']} failed); "
            f"items: {outcomes['succeeded']} succeeded") in capsys.readouterr().out


def test_run_config_settings_reach_the_output_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=3)
    platform.run_job("sentiment_submit", run_config={"ops": {"sentiment_requests": {"config": {
        "labels": ["upbeat", "downbeat"], "max_tokens": 24,
        "system_prompt": "Say whether the review is upbeat or downbeat. Reply in JSON."}}}})
    platform.drive_sensor(timeout=300)
    labels = platform.query("SELECT label, raw_content FROM document_labels")
    assert len(labels) == 3 and {label for label, _ in labels} <= {"upbeat", "downbeat"}, labels


def test_a_full_disk_while_collecting_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=4)
    platform.run_job("embeddings_submit")
    real_download = BatchClient.download

    def disk_full(self: BatchClient, file_id: str, dest: Path, *, durable: bool = True) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(BatchClient, "download", disk_full)
    request = _collect_requested(platform)
    failed = platform.defs.resolve_job_def(request.job_name).execute_in_process(
        partition_key=MONTH, instance=platform.instance, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
    assert "nothing was lost" in message and "launch embeddings_collect for 2024-03 again" in message
    monkeypatch.setattr(BatchClient, "download", real_download)
    platform.run_job("embeddings_collect")
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(4,)]
    _one_final_outcome_per_item(platform)


def test_a_garbled_result_line_is_retried_and_its_batchmates_are_kept(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Three batches of two, collected together (their files are parsed in one read); one line of one output file
    # arrives cut in half and another with a custom_id nobody asked for.
    platform = _real(tmp_path, monkeypatch, docs=6)
    platform.run_job("embeddings_submit", run_config={
        "ops": {"embeddings_requests": {"config": {"max_requests_per_file": 2}}}})
    with platform.ledger() as ledger:
        batch_ids = [f.batch_id for f in ledger.files(pipeline="embeddings", month=MONTH)]
    assert len(batch_ids) == 3
    client = _client(platform)
    deadline = time.monotonic() + 120
    while any(client.retrieve(b or "").status != "completed" for b in batch_ids):
        assert time.monotonic() < deadline
        time.sleep(0.3)
    real_download = BatchClient.download
    garbled: list[str] = []

    def garbling(self: BatchClient, file_id: str, dest: Path, *, durable: bool = True) -> int:
        written = real_download(self, file_id, dest, durable=durable)
        if not garbled and dest.name.endswith("_output.jsonl"):
            first, *rest = dest.read_bytes().splitlines(keepends=True)
            garbled.append(json.loads(first)["custom_id"])
            stranger = json.dumps({**json.loads(rest[0]), "custom_id": "nobody-asked"}).encode() + b"\n"
            dest.write_bytes(first[: len(first) // 2] + b"\n" + b"".join(rest) + stranger)
        return written

    monkeypatch.setattr(BatchClient, "download", garbling)
    with pytest.warns(ResultFileWarning):
        platform.drive_sensor()
    [item_id] = [i for (i,) in platform.query(
        f"SELECT item_id FROM batch_requests WHERE custom_id = '{garbled[0]}' AND attempt = 1")]
    # the cut line's item came back missing, went out again on its own, and succeeded; nothing else did
    assert platform.query(f"SELECT attempt, outcome, error_code FROM batch_outcomes WHERE item_id = '{item_id}' "
                          "ORDER BY attempt") == [(1, "missing", "missing_result"), (2, "succeeded", None)]
    assert platform.query("SELECT attempt, count(*) FROM batch_requests WHERE source = 'submitted' "
                          "GROUP BY 1 ORDER BY 1") == [(1, 6), (2, 1)]
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE custom_id = 'nobody-asked'") == [(0,)]
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(6,)]
    _one_final_outcome_per_item(platform)
    assert _month_state(platform) == MonthState.DONE


def test_duckdb_out_of_memory_while_collecting_says_what_to_set(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=4)
    platform.run_job("embeddings_submit")
    request = _collect_requested(platform)
    monkeypatch.setenv("BATCH_ASSETS_DUCKDB_MEMORY_LIMIT", "1KB")  # far below what any step needs
    failed = platform.defs.resolve_job_def(request.job_name).execute_in_process(
        partition_key=MONTH, instance=platform.instance, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
    assert "set it higher" in message and "BATCH_ASSETS_DUCKDB_MEMORY_LIMIT" in message, message
    monkeypatch.delenv("BATCH_ASSETS_DUCKDB_MEMORY_LIMIT")
    platform.run_job("embeddings_collect")
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(4,)]
    _one_final_outcome_per_item(platform)


def test_a_crash_after_the_warehouse_write_before_the_ledger_knows_collects_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = _real(tmp_path, monkeypatch, docs=6)
    platform.run_job("embeddings_submit")
    request = _collect_requested(platform)
    real_update_files = Ledger.update_files

    def dies_before_recording_collected(self: Ledger, updates: Any) -> None:
        if any(values.get("state") == FileState.COLLECTED for _, _, values in updates):
            raise RuntimeError("the process died here")  # outcomes and costs are written, the ledger not told
        real_update_files(self, updates)

    monkeypatch.setattr(Ledger, "update_files", dies_before_recording_collected)
    failed = platform.defs.resolve_job_def(request.job_name).execute_in_process(
        partition_key=MONTH, instance=platform.instance, raise_on_error=False)
    assert not failed.success
    assert "the process died here" in str(failed.get_step_failure_events()[0].event_specific_data.error)  # type: ignore[union-attr]
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE pipeline = 'embeddings'") == [(6,)]
    monkeypatch.setattr(Ledger, "update_files", real_update_files)
    platform.run_job("embeddings_collect")
    assert platform.query("SELECT count(*) FROM document_embeddings") == [(6,)]
    _one_final_outcome_per_item(platform)
    # collected twice, recorded once: one outcome per item, one cost row per batch, nothing billed twice
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE pipeline = 'embeddings'") == [(6,)]
    assert platform.query("SELECT count(*), count(DISTINCT batch_id) FROM batch_costs "
                          "WHERE pipeline = 'embeddings'") == [(1, 1)]

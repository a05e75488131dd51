"""The batch sensor over a real ephemeral Dagster instance and the local engine (fake models)."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from batch_assets_tests.defs.conftest import MONTH, Platform, make_platform


@pytest.fixture
def slow_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Platform:
    """Items take 0.3 s each, so a month stays pending for a few ticks."""
    return make_platform(tmp_path, monkeypatch, models="fake", BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS="0.3")


def test_nothing_submitted_means_nothing_to_do(fake_platform: Platform) -> None:
    result = fake_platform.tick()
    assert result.skip_reason and not result.run_requests


def test_pending_progress_then_one_collect_run(slow_platform: Platform) -> None:
    slow_platform.run_job("embeddings_submit")
    first = slow_platform.tick()
    assert not first.run_requests
    [observation] = first.asset_events
    assert observation.asset_key == dg.AssetKey("embeddings_batches") and observation.partition == MONTH
    assert observation.metadata["total"].value == 6
    assert observation.metadata["month_state"].value == "waiting"

    requests, progress_seen = [], []
    deadline = time.monotonic() + 60
    while not requests:
        assert time.monotonic() < deadline
        time.sleep(0.4)
        result = slow_platform.tick()
        progress_seen += [e.metadata["completed"].value for e in result.asset_events]
        requests = result.run_requests
    [request] = requests
    assert request.job_name == "embeddings_collect" and request.partition_key == MONTH
    assert request.run_key.startswith(f"collect:embeddings:{MONTH}:")
    assert progress_seen[-1] == 6 and progress_seen == sorted(progress_seen)

    slow_platform.run_job(request.job_name, request.partition_key)
    again = slow_platform.tick()  # collected: no second run
    assert again.skip_reason and not again.run_requests


def test_new_settings_wait_for_the_attempt_in_flight_then_resubmit_everything(slow_platform: Platform) -> None:
    large = {"ops": {"embeddings_requests": {"config": {"model": "text-embedding-3-large"}}}}
    slow_platform.run_job("embeddings_submit", run_config=large)
    slow_platform.run_job("embeddings_submit")  # in flight: nothing planned, nothing paid twice
    assert len(slow_platform.drive_sensor(timeout=120)) == 1
    assert slow_platform.query("SELECT count(*), count(DISTINCT batch_id) FROM batch_outcomes") == [(6, 1)]
    slow_platform.run_job("embeddings_submit")  # new settings, new bodies: every item again
    slow_platform.drive_sensor(timeout=120)
    assert slow_platform.query("SELECT count(*), count(DISTINCT batch_id) FROM batch_outcomes") == [(12, 2)]
    assert slow_platform.query("SELECT count(*) FROM document_embeddings") == [(6,)]
    slow_platform.run_job("embeddings_submit")  # same settings again: every item already answered
    slow_platform.drive_sensor(timeout=120)
    assert slow_platform.query("SELECT count(*), count(DISTINCT batch_id) FROM batch_outcomes") == [(12, 2)]


def test_a_fresh_cursor_does_not_collect_a_month_twice(fake_platform: Platform) -> None:
    fake_platform.run_job("reports_submit")
    assert len(fake_platform.drive_sensor()) == 1
    fake_platform.cursor = None  # e.g. the sensor was reset
    result = fake_platform.tick()
    assert result.skip_reason and not result.run_requests


def test_the_sensor_never_opens_duckdb(fake_platform: Platform) -> None:
    fake_platform.run_job("reports_submit")
    # Hold the warehouse's write lock the way a long run would: the sensor still ticks.
    with duckdb.connect(str(fake_platform.settings.duckdb_path)):
        deadline = time.monotonic() + 60
        while not fake_platform.tick().run_requests:
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_the_month_state_shows_waiting_retrying_then_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    platform = make_platform(tmp_path, monkeypatch, models="fake", BATCH_ASSETS_LOCAL_EXPIRE_AFTER_ITEMS="4")
    platform.run_job("embeddings_submit")
    platform.drive_sensor(timeout=120)
    assert platform.month_states("embeddings") == ["waiting", "retrying", "done"]


def test_a_stalled_batch_is_reported_with_the_command_that_cancels_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    platform = make_platform(tmp_path, monkeypatch, models="fake", BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS="3",
                             BATCH_ASSETS_STALL_AFTER_HOURS="0.0002")  # 0.72 s
    platform.run_job("embeddings_submit")
    time.sleep(1.0)
    platform.tick()
    [stall] = [e for e in platform.sensor_events if isinstance(e, dg.AssetCheckEvaluation)]
    assert stall.check_name == "batches_progressing" and not stall.passed and stall.partition == MONTH
    assert "batch-assets batches cancel --pipeline embeddings --month 2024-03" in (stall.description or "")
    platform.tick()  # reported once, not at every tick
    assert len([e for e in platform.sensor_events if isinstance(e, dg.AssetCheckEvaluation)]) == 1
    # The user cancels from the launchpad: the cancel_month job.
    platform.defs.resolve_job_def("cancel_month").execute_in_process(
        instance=platform.instance,
        run_config={"ops": {"cancel_batches": {"config": {"pipeline": "embeddings", "month": "2024-03"}}}})
    requested = platform.drive_sensor(timeout=120)
    assert [r.job_name for r in requested] == ["embeddings_collect"]
    assert platform.month_states("embeddings")[-1] == "cancelled"
    assert platform.query("SELECT count(*) FROM batch_outcomes WHERE final") == [(6,)]

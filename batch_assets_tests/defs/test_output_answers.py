"""The output step reads the accounting the month's last collect left, and only while it is for the current plan."""

from __future__ import annotations

from datetime import date

import dagster as dg

from batch_assets import warehouse
from batch_assets.pipelines.collect import CollectOutcome, month_answers, month_report
from batch_assets.pipelines.outputs import _successes
from batch_assets_tests.defs.conftest import MONTH, Platform

SENTIMENT_MONTH = date.fromisoformat(MONTH)


def _both(platform: Platform) -> tuple[CollectOutcome, CollectOutcome]:
    with platform.ledger() as ledger, warehouse.connect(platform.settings.duckdb_path) as con:
        return (month_answers(ledger, con, "sentiment", SENTIMENT_MONTH),
                month_report(ledger, con, "sentiment", SENTIMENT_MONTH))


def _answers(outcome: CollectOutcome) -> list[tuple]:
    return sorted(_successes(outcome.classified).iter_rows())


def test_the_stored_accounting_is_the_same_as_accounting_again(fake_platform: Platform) -> None:
    fake_platform.run_job("sentiment_submit")
    fake_platform.drive_sensor()
    stored, fresh = _both(fake_platform)
    assert stored.report == fresh.report and stored.settings == fresh.settings
    assert _answers(stored) == _answers(fresh) and len(_answers(stored)) == 6
    # a success collected twice (one request file submitted twice, say) still gives one answer per item
    with warehouse.connect(fake_platform.settings.duckdb_path) as con:
        con.execute("INSERT INTO batch_outcomes SELECT * REPLACE ('batch_zz' AS batch_id) FROM batch_outcomes")
    stored_again, _ = _both(fake_platform)
    assert len(_answers(stored_again)) == 6
    assert {row[1] for row in _answers(stored_again)} == {row[1] for row in _answers(fresh)}


def test_a_new_plan_not_collected_yet_is_accounted_anew(fake_platform: Platform) -> None:
    fake_platform.run_job("sentiment_submit")
    fake_platform.drive_sensor()
    # new settings from the launchpad: a new current plan, its batches not collected yet
    config = {"ops": {"sentiment_requests": {"config": {"labels": ["upbeat", "downbeat"]}}}}
    fake_platform.run_job("sentiment_submit", run_config=config)
    stored, fresh = _both(fake_platform)
    assert stored.report == fresh.report
    assert stored.report is not None and stored.report.by_state["in_flight"] == 6
    assert _answers(stored) == _answers(fresh) == []
    assert stored.settings is not None and stored.settings.pipeline.labels == ("upbeat", "downbeat")
    # the output table built now (only it, from the UI, say) holds none of the old plan's answers
    fake_platform.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=MONTH, instance=fake_platform.instance, asset_selection=[dg.AssetKey("document_labels")])
    assert fake_platform.query("SELECT count(*) FROM document_labels") == [(0,)]
    fake_platform.drive_sensor()
    labels = [label for (label,) in fake_platform.query("SELECT label FROM document_labels")]
    assert len(labels) == 6 and set(labels) <= {"upbeat", "downbeat"}

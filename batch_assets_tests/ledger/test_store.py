"""The ledger store: plans and files, the per-month lease, versioned schema, settings that survive releases."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from batch_assets.batching.request_files import BatchLimits
from batch_assets.ledger.records import FileState, LedgerError, MonthState, NewFile, PlanKind, PlanState
from batch_assets.ledger.store import Ledger, ledger_url
from batch_assets.ledger.tables import SCHEMA_VERSION
from batch_assets.pipelines.spec import PipelineSettings, RetryPolicy, SubmissionSettings

MONTH = "2024-03-01"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    with Ledger(ledger_url(tmp_path)) as opened:
        yield opened


def _plan(ledger: Ledger, kind: PlanKind = PlanKind.INITIAL, attempt: int = 1, files: int = 1) -> int:
    plan = ledger.add_plan(pipeline="p", month=MONTH, attempt=attempt, kind=kind, endpoint="/v1/embeddings",
                           settings="{}", n_items=3,
                           files=[NewFile(f"sha{attempt}-{i}", f"f{i}.jsonl", "/v1/embeddings", "m", 3, 30)
                                  for i in range(files)])
    return plan.plan_id


def test_a_new_plan_supersedes_one_never_submitted(ledger: Ledger) -> None:
    first = _plan(ledger)
    second = _plan(ledger, PlanKind.RERUN, attempt=2)
    assert ledger.plan(first).state == PlanState.SUPERSEDED  # type: ignore[union-attr]
    assert {f.state for f in ledger.files(plan_id=first)} == {FileState.CANCELLED}
    record = ledger.month("p", MONTH)
    assert record is not None and record.root_plan_id == second and record.state == MonthState.PLANNED
    assert ledger.next_attempt("p", MONTH) == 3


def test_a_retry_keeps_the_root_plan(ledger: Ledger) -> None:
    root = _plan(ledger)
    ledger.set_plan_state(root, PlanState.SUBMITTED)
    retry = ledger.add_plan(pipeline="p", month=MONTH, attempt=2, kind=PlanKind.RETRY, endpoint="/v1/embeddings",
                            settings="{}", n_items=1, files=[], root_plan_id=root, not_before=time.time() + 60)
    record = ledger.month("p", MONTH)
    assert record is not None and record.root_plan_id == root and record.state == MonthState.RETRYING
    assert retry.root_plan_id == root and ledger.plan(root).state == PlanState.SUBMITTED  # type: ignore[union-attr]


def test_the_month_lease_lets_one_holder_in_at_a_time(ledger: Ledger) -> None:
    inside, overlaps = [], []

    def hold() -> None:
        with ledger.month_lease("p", MONTH, poll_seconds=0.01):
            inside.append(1)
            overlaps.append(len(inside))
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1, 1, 1, 1]


def test_a_dead_holders_lease_expires_and_a_waiting_one_says_what_to_do(ledger: Ledger) -> None:
    assert ledger.try_lease("p", MONTH, "dead-run", seconds=0.2)
    with pytest.raises(LedgerError, match="being submitted by another process"):
        with ledger.month_lease("p", MONTH, wait_seconds=0.05, poll_seconds=0.01):
            pass
    time.sleep(0.25)
    with ledger.month_lease("p", MONTH, wait_seconds=1):
        assert ledger.month("p", MONTH).lease_owner != "dead-run"  # type: ignore[union-attr]


def test_a_ledger_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    with Ledger(ledger_url(tmp_path)) as ledger:
        assert ledger.schema_version() == SCHEMA_VERSION
        with ledger.engine.begin() as con:
            con.execute(sa.text("UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(LedgerError, match="upgrade batch_assets"):
        Ledger(ledger_url(tmp_path))


def test_the_ledger_url_defaults_to_sqlite_beside_the_warehouse(tmp_path: Path) -> None:
    assert ledger_url(tmp_path, {}) == f"sqlite:///{tmp_path}/ledger.sqlite3"
    assert ledger_url(tmp_path, {"BATCH_ASSETS_LEDGER_URL": "postgresql://h/db"}) == "postgresql://h/db"


def test_settings_written_by_an_older_release_still_load() -> None:
    settings = SubmissionSettings(PipelineSettings(model="m", labels=("a", "b")), BatchLimits(max_tokens_per_file=9),
                                  RetryPolicy(max_attempts=5))
    assert SubmissionSettings.from_json(settings.to_json()) == settings
    # a field this release no longer has is ignored with a warning; a field it added takes its default
    old = '{"version": 1, "pipeline": {"model": "m", "retired_field": 1}, "limits": {}}'
    with pytest.warns(UserWarning, match="retired_field"):
        loaded = SubmissionSettings.from_json(old)
    assert loaded.pipeline.model == "m" and loaded.retry == RetryPolicy()
    with pytest.raises(ValueError, match="upgrade batch_assets"):
        SubmissionSettings.from_json('{"version": 99}')

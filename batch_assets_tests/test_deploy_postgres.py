"""The deployment's instance for real: a PostgreSQL server on this machine, `dagster dev` (webserver + daemon)
with deploy/dagster.yaml pointed at it, one month end to end on the local engine, then the runs, their
queueing and their event logs read back from PostgreSQL itself."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from batch_assets_tests.dagster_dev_helpers import dagster_dev, dagster_dev_env, submit_month_and_wait_for_collects
from batch_assets_tests.postgres_server import PostgresServer, running_postgres

ROOT = Path(__file__).resolve().parents[1]
MONTH = "2024-05-01"
PROVIDER_TAG = "batch_assets/provider"
pytestmark = pytest.mark.e2e


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with running_postgres(durable=False) as server:
        yield server


def rows(server: PostgresServer, sql: str, *params: object) -> list[tuple]:
    con = server.connect()
    try:
        with con.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        con.close()


def test_a_month_end_to_end_on_the_postgres_instance(tmp_path: Path, postgres: PostgresServer) -> None:
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    shutil.copy(ROOT / "workspace.yaml", tmp_path / "workspace.yaml")
    ledger_url = postgres.create_database("batch_assets_ledger")  # the batch ledger on the same server
    env = {**postgres.dagster_env(), "BATCH_ASSETS_LEDGER_URL": ledger_url}
    with dagster_dev(tmp_path, dagster_dev_env(tmp_path, env)) as web:
        runs = submit_month_and_wait_for_collects(web, MONTH)

    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM document_embeddings").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM document_labels WHERE label IS NOT NULL").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM monthly_reports").fetchall() == [(5,)]

    # Every run the UI showed is a row in PostgreSQL, finished, tagged with its provider for the run queue.
    run_ids = {run["runId"] for run in runs}
    stored = dict(rows(postgres, "SELECT run_id, status FROM runs"))
    assert {run_id: stored.get(run_id) for run_id in run_ids} == dict.fromkeys(run_ids, "SUCCESS")
    tagged = {run_id for (run_id,) in rows(postgres, "SELECT run_id FROM run_tags WHERE key = %s AND value = %s",
                                           PROVIDER_TAG, "local")}
    assert run_ids <= tagged
    # Each run waited in the QueuedRunCoordinator's queue before the daemon started it.
    enqueued = {run_id for (run_id,) in rows(postgres, "SELECT DISTINCT run_id FROM event_logs "
                                                       "WHERE dagster_event_type = 'PIPELINE_ENQUEUED'")}
    assert run_ids <= enqueued
    # Their event logs (materializations included) and the sensor's ticks are in PostgreSQL too.
    materialized = {key for (key,) in rows(postgres, "SELECT DISTINCT asset_key FROM event_logs "
                                                     "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")}
    assert {'["document_labels"]', '["document_embeddings"]', '["monthly_reports"]'} <= materialized
    assert rows(postgres, "SELECT count(*) FROM job_ticks")[0][0] > 0
    # The batch ledger lives in its own PostgreSQL database: every pipeline's month is done there.
    ledger = postgres.connect("batch_assets_ledger")
    try:
        with ledger.cursor() as cursor:
            cursor.execute("SELECT pipeline, state FROM months ORDER BY pipeline")
            assert cursor.fetchall() == [("embeddings", "done"), ("reports", "done"), ("sentiment", "done"),
                                         ("titles", "done")]
    finally:
        ledger.close()
    # and nothing went to a SQLite instance beside dagster.yaml, nor to a SQLite ledger
    assert not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("ledger.sqlite3"))

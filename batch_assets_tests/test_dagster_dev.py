"""The path a new user takes: `dg dev` with the project's own dagster.yaml and workspace.yaml, "Materialize all" on
the asset graph for one month (a backfill of every asset), and the daemon's batch sensor carries the month to DuckDB
with no further click; the backfill completes, green, when the last collect has run."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from batch_assets_tests.dagster_dev_helpers import backfill_month_and_wait_for_collects, dagster_dev, dagster_dev_env

ROOT = Path(__file__).resolve().parents[1]
MONTH = "2024-03-01"
pytestmark = pytest.mark.e2e


def test_a_backfill_of_every_asset_completes_when_the_sensor_has_collected_the_month(tmp_path: Path) -> None:
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    with dagster_dev(tmp_path, dagster_dev_env(tmp_path)) as web:
        selector = web.repository_selector()
        assert web.sensors(selector) == [{"name": "batch_sensor", "sensorState": {"status": "RUNNING"}}]
        runs = backfill_month_and_wait_for_collects(web, MONTH)

    collect_runs = [r for r in runs if r["jobName"].endswith("_collect")]
    assert len(collect_runs) == 4  # exactly once per pipeline-month, the YAML pipeline's included
    with duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM document_embeddings").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM document_labels WHERE label IS NOT NULL").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM monthly_reports").fetchall() == [(5,)]
        assert con.sql("SELECT count(*), count(title) FROM document_titles").fetchall() == [(4, 4)]
        assert con.sql("SELECT count(DISTINCT pipeline) FROM batch_costs").fetchall() == [(4,)]
    assert (tmp_path / ".dagster_home" / "storage").is_dir()  # history kept under the project's DAGSTER_HOME
    # What a new user saw at every start: no lifecycle warning about the project's own code, nor about `dagster dev`.
    log = (tmp_path / "dagster_dev.log").read_text()
    assert not any(kind in log for kind in ("SupersessionWarning", "PreviewWarning", "BetaWarning")), log

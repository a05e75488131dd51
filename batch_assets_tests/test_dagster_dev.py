"""The path a new user takes: `dagster dev` with the project's own dagster.yaml and workspace.yaml, one run
of `submit_month`, and the daemon's batch sensor carries the month to DuckDB with no further click."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest
import requests

from batch_assets_tests.local.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
MONTH = "2024-03-01"
pytestmark = pytest.mark.e2e



class Webserver:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"

    def query(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(self.url, json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def runs(self) -> list[dict]:
        data = self.query("{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }")
        return data["runsOrError"]["results"]


def _wait(predicate, timeout: float, what: str, pause: float = 1.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (requests.ConnectionError, requests.HTTPError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)


@pytest.fixture
def dagster_dev(tmp_path: Path):  # noqa: ANN201
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "BATCH_ASSETS_DATA_DIR": str(tmp_path / "data"),
           "BATCH_ASSETS_DOCS_PER_MONTH": "4", "BATCH_ASSETS_SENSOR_INTERVAL_SECONDS": "5",
           "BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS": "5"}
    for name in ("BATCH_ASSETS_PROVIDER", "BATCH_ASSETS_LOCAL_MODELS", "BATCH_ASSETS_DUCKDB_PATH",
                 "BATCH_ASSETS_LOCAL_STATE_DIR"):
        env.pop(name, None)
    log = (tmp_path / "dagster_dev.log").open("wb")
    process = subprocess.Popen([str(Path(os.sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                                "-p", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        yield Webserver(port), tmp_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


def test_one_click_then_the_sensor_finishes_the_month(dagster_dev) -> None:  # noqa: ANN001
    web, home = dagster_dev
    repo = _wait(lambda: web.query(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
    )["repositoriesOrError"]["nodes"], 120, "the code location to load")
    selector = {"repositoryName": repo[0]["name"], "repositoryLocationName": repo[0]["location"]["name"]}

    sensors = web.query("query($s: RepositorySelector!) { sensorsOrError(repositorySelector: $s) { ... on Sensors "
                        "{ results { name sensorState { status } } } } }", {"s": selector})
    assert sensors["sensorsOrError"]["results"] == [{"name": "batch_sensor", "sensorState": {"status": "RUNNING"}}]

    launched = web.query(
        "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
        "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
        {"p": {"selector": {**selector, "jobName": "submit_month"}, "runConfigData": {},
               "executionMetadata": {"tags": [{"key": "dagster/partition", "value": MONTH}]}}})
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched

    def collected() -> bool:
        runs = web.runs()
        failed = [r for r in runs if r["status"] == "FAILURE"]
        assert not failed, f"runs failed: {failed}; see {home / 'dagster_dev.log'}"
        done = {r["jobName"] for r in runs if r["status"] == "SUCCESS"}
        return {"submit_month", "embeddings_collect", "sentiment_collect", "reports_collect"} <= done

    _wait(collected, 600, "the sensor to launch and finish the three collect runs", pause=3)
    collect_runs = [r for r in web.runs() if r["jobName"].endswith("_collect")]
    assert len(collect_runs) == 3  # exactly once per pipeline-month
    assert all({"key": "dagster/partition", "value": MONTH} in r["tags"] for r in collect_runs)

    with duckdb.connect(str(home / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM document_embeddings").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM document_labels WHERE label IS NOT NULL").fetchall() == [(4,)]
        assert con.sql("SELECT count(*) FROM monthly_reports").fetchall() == [(5,)]
        assert con.sql("SELECT count(DISTINCT pipeline) FROM batch_costs").fetchall() == [(3,)]
    assert (home / ".dagster_home" / "storage").is_dir()  # history kept under the project's DAGSTER_HOME

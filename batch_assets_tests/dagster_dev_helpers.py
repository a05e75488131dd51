"""What the end-to-end tests that start `dg dev` (the README's command) share: the process, its GraphQL API, and
the wait for a month to go from one `submit_month` launch to every pipeline's collect run, with no further click."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests

from batch_assets_tests.local.helpers import free_port

T = TypeVar("T")

# Settings a test of the whole platform must not inherit from the shell that runs it.
_ISOLATED_VARIABLES = ("BATCH_ASSETS_PROVIDER", "BATCH_ASSETS_LOCAL_MODELS", "BATCH_ASSETS_DUCKDB_PATH",
                       "BATCH_ASSETS_LOCAL_STATE_DIR")


class Webserver:
    """The GraphQL API of a running Dagster webserver."""

    def __init__(self, port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}/graphql"
        self.log_path = log_path

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(self.url, json={"query": query, "variables": variables or {}}, timeout=30)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body
        return body["data"]

    def runs(self) -> list[dict[str, Any]]:
        data = self.query("{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }")
        return data["runsOrError"]["results"]

    def repository_selector(self, timeout: float = 180) -> dict[str, str]:
        """Waits for the code location to load; its repository selector."""
        nodes = wait_for(lambda: self.query(
            "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"
        )["repositoriesOrError"]["nodes"], timeout, "the code location to load")
        return {"repositoryName": nodes[0]["name"], "repositoryLocationName": nodes[0]["location"]["name"]}

    def job_names(self, selector: dict[str, str]) -> list[str]:
        data = self.query("query($s: RepositorySelector!) { repositoryOrError(repositorySelector: $s) "
                          "{ ... on Repository { jobs { name } } } }", {"s": selector})
        return [job["name"] for job in data["repositoryOrError"]["jobs"]]

    def sensors(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        data = self.query("query($s: RepositorySelector!) { sensorsOrError(repositorySelector: $s) { ... on Sensors "
                          "{ results { name sensorState { status } } } } }", {"s": selector})
        return data["sensorsOrError"]["results"]

    def asset_keys(self) -> list[list[str]]:
        data = self.query("{ assetNodes { assetKey { path } } }")
        return [node["assetKey"]["path"] for node in data["assetNodes"]]

    def launch_backfill_of_every_asset(self, partition: str) -> str:
        """What a Dagster user does first: select every asset on the graph, Materialize all, one partition, launch
        (the UI makes it a backfill). The backfill id."""
        launched = self.query(
            "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
            "... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }",
            {"p": {"partitionNames": [partition], "assetSelection": [{"path": key} for key in self.asset_keys()],
                   "tags": [{"key": "dagster/from_ui", "value": "true"}]}})
        assert launched["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", launched
        return launched["launchPartitionBackfill"]["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        data = self.query("query($id: String!) { partitionBackfillOrError(backfillId: $id) { "
                          "... on PartitionBackfill { status } } }", {"id": backfill_id})
        return data["partitionBackfillOrError"]["status"]

    def launch_partition(self, selector: dict[str, str], job_name: str, partition: str) -> str:
        """Launches one partition of a job as the launchpad does; the run id."""
        launched = self.query(
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename "
            "... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
            {"p": {"selector": {**selector, "jobName": job_name}, "runConfigData": {},
                   "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]}}})
        assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
        return launched["launchRun"]["run"]["runId"]


def wait_for(predicate: Callable[[], T], timeout: float, what: str, pause: float = 1.0) -> T:
    """Polls until the predicate returns something truthy; a webserver still starting counts as not yet."""
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


def dagster_dev_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a lean demo: 4 documents a month, a fast sensor, everything under `home`.

    Each line of a batch takes at least 2 s (the engine's slow-processing fault), so every batch still runs when
    its results step looks and each pipeline takes the held-collect path the callers wait for: a 4-line embeddings
    batch on the real model otherwise ends in about a second, and its results step collects it in place."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "BATCH_ASSETS_DATA_DIR": str(home / "data"),
           "BATCH_ASSETS_DOCS_PER_MONTH": "4", "BATCH_ASSETS_SENSOR_INTERVAL_SECONDS": "5",
           "BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS": "5", "BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS": "2"}
    for name in _ISOLATED_VARIABLES:
        env.pop(name, None)
    env.update(extra or {})
    return env


@contextmanager
def dagster_dev(home: Path, env: Mapping[str, str]) -> Iterator[Webserver]:
    """`dg dev -w workspace.yaml`, as scripts/dev.sh runs it, in `home` (which holds dagster.yaml and
    workspace.yaml), stopped after. Its output is in `dagster_dev.log` there."""
    port = free_port()
    log_path = home / "dagster_dev.log"
    dg = Path(sys.executable).parent / "dg"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(dg), "dev", "-w", "workspace.yaml", "-p", str(port)], cwd=home,
                                   env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield Webserver(port, log_path)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def submit_month_and_wait_for_collects(web: Webserver, month: str, timeout: float = 600) -> list[dict[str, Any]]:
    """Launches `submit_month` for one month and waits until the batch sensor has launched every `*_collect`
    job for it and each succeeded. Fails at once, naming the log, if any run fails. The month's runs."""
    selector = web.repository_selector()
    collect_jobs = {name for name in web.job_names(selector) if name.endswith("_collect")}
    assert collect_jobs, "the code location has no *_collect jobs"
    web.launch_partition(selector, "submit_month", month)

    def month_runs() -> list[dict[str, Any]]:
        return [r for r in web.runs() if {"key": "dagster/partition", "value": month} in r["tags"]]

    def collected() -> bool:
        runs = month_runs()
        failed = [r for r in runs if r["status"] == "FAILURE"]
        assert not failed, f"runs failed: {failed}; see {web.log_path}"
        done = {r["jobName"] for r in runs if r["status"] == "SUCCESS"}
        return {"submit_month", *collect_jobs} <= done

    wait_for(collected, timeout, f"the sensor to launch and finish {sorted(collect_jobs)}", pause=3)
    return month_runs()


def backfill_month_and_wait_for_collects(web: Webserver, month: str, timeout: float = 600) -> list[dict[str, Any]]:
    """Backfills every asset for one month from the graph and waits until the backfill has completed: its runs
    submitted the batches and queued each pipeline's collect run, held until the batches ended, which the batch
    sensor then released. Fails at once if any run fails or the backfill ends failed. The month's runs."""
    selector = web.repository_selector()
    collect_jobs = {name for name in web.job_names(selector) if name.endswith("_collect")}
    backfill_id = web.launch_backfill_of_every_asset(month)

    def completed() -> bool:
        failed = [r for r in web.runs() if r["status"] == "FAILURE"]
        assert not failed, f"runs failed: {failed}; see {web.log_path}"
        status = web.backfill_status(backfill_id)
        assert status not in ("FAILED", "COMPLETED_FAILED", "CANCELED"), f"backfill {status}; see {web.log_path}"
        return status in ("COMPLETED", "COMPLETED_SUCCESS")

    wait_for(completed, timeout, f"backfill {backfill_id} to complete", pause=3)
    runs = [r for r in web.runs() if {"key": "dagster/partition", "value": month} in r["tags"]]
    in_backfill = {r["jobName"] for r in runs if {"key": "dagster/backfill", "value": backfill_id} in r["tags"]}
    assert collect_jobs <= in_backfill, f"{sorted(collect_jobs - in_backfill)} did not run inside the backfill"
    return runs

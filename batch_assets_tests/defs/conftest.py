"""A whole platform per test: its own data folder, local engine state, DuckDB file and Dagster instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from batch_assets.defs.definitions import build_definitions
from batch_assets.ledger.store import Ledger
from batch_assets.settings import PlatformSettings

MONTH = "2024-03-01"


@dataclass
class Platform:
    defs: dg.Definitions
    instance: dg.DagsterInstance
    settings: PlatformSettings
    cursor: str | None = None
    collect_runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    sensor_events: list[object] = field(default_factory=list)  # observations and check evaluations, every tick

    def run_job(self, name: str, partition: str = MONTH, **kwargs: object) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(name).execute_in_process(partition_key=partition, instance=self.instance,
                                                                     **kwargs)
        assert result.success
        return result

    def tick(self) -> dg.SensorResult:
        sensor = self.defs.resolve_sensor_def("batch_sensor")
        # As the daemon does: the sensor's resources are set up for the tick and torn down after it.
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                     resources={"batch_api": self.defs.resources["batch_api"],
                                                "ledger": self.defs.resources["ledger"]}) as context:
            result = sensor(context)
        self.cursor = result.cursor
        self.sensor_events += result.asset_events or []
        return result

    def month_states(self, pipeline: str) -> list[str]:
        """The month states the sensor reported for a pipeline, in order, repeats collapsed."""
        states: list[str] = []
        for event in self.sensor_events:
            if isinstance(event, dg.AssetObservation) and event.asset_key == dg.AssetKey(f"{pipeline}_batches"):
                state = event.metadata["month_state"].value
                if not states or states[-1] != state:
                    states.append(str(state))
        return states

    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_url)

    def open_plans(self) -> int:
        with self.ledger() as ledger:
            return len(ledger.open_plans())

    def drive_sensor(self, timeout: float = 600.0) -> list[dg.RunRequest]:
        """Ticks the sensor like the daemon does, executing each run it requests (collects, due retries), until
        no plan is open any more (every month done, done with failures or cancelled)."""
        requested: list[dg.RunRequest] = []
        deadline = time.monotonic() + timeout
        while True:
            result = self.tick()
            for request in result.run_requests or []:
                requested.append(request)
                self.collect_runs.append(self.run_job(request.job_name, request.partition_key))
            if not result.run_requests and not self.open_plans():
                return requested
            assert time.monotonic() < deadline, "batches still pending after the timeout"
            time.sleep(0.3)

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.settings.duckdb_path), read_only=True) as con:
            return con.sql(sql).fetchall()


def make_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, models: str, docs_per_month: int = 6,
                  **env: str) -> Platform:
    monkeypatch.setenv("BATCH_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BATCH_ASSETS_DOCS_PER_MONTH", str(docs_per_month))
    monkeypatch.setenv("BATCH_ASSETS_LOCAL_MODELS", models)
    monkeypatch.setenv("BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS", "3")
    monkeypatch.setenv("BATCH_ASSETS_RETRY_DELAY_SECONDS", "0")
    monkeypatch.delenv("BATCH_ASSETS_PROVIDER", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = PlatformSettings.from_env()
    return Platform(build_definitions(settings), dg.DagsterInstance.ephemeral(), settings)


@pytest.fixture
def fake_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The platform on the local engine with fake models: fast, for unit tests of the Dagster pieces."""
    yield make_platform(tmp_path, monkeypatch, models="fake")


@pytest.fixture
def real_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """The platform on the local engine with the real local models."""
    yield make_platform(tmp_path, monkeypatch, models="real", docs_per_month=8)

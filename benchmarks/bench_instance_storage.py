"""Benchmark: the batch sensor's and the run queue's Dagster-instance work, SQLite vs PostgreSQL.

Seeds one instance per storage with the same history (each pipeline's `<p>_batches` materialization per
month, and `<p>_results` for half the months, as after a backfill), then times what the platform asks
of its instance:
  - a sensor tick on a fresh cursor: page through every batches materialization and ask, per month,
    whether its results were materialized since (fetch_materializations, as batch_assets/defs/sensor.py);
  - a steady-state tick: the same read from the cursor, finding nothing new;
  - launching collect runs: create a run, then enqueue it through the QueuedRunCoordinator;
  - the run queue's poll: read every queued run (what the daemon does each loop).
SQLite is Dagster's default instance (the baseline); PostgreSQL is deploy/dagster.yaml on a server this
script starts (Debian's postgresql package; fsync on, as in production). Both in the same run, on this
machine: the ratio says what a shared, networked instance costs, not how fast a tuned server is.

    .venv/bin/python benchmarks/bench_instance_storage.py                  # 3 pipelines x 48 months
    .venv/bin/python benchmarks/bench_instance_storage.py --months 120 --repeats 9
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.run_coordinator import SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout, installed or not

from batch_assets_tests.postgres_server import running_postgres  # noqa: E402

PIPELINES = ("embeddings", "sentiment", "reports")
PAGE = 200  # the sensor's discovery page size


@dg.op
def noop() -> None:
    pass


@dg.job(tags={"batch_assets/provider": "openai"})
def collect_job() -> None:
    noop()


# Queued runs must say where their code lives; the benchmark never starts them, so any code server will do.
ORIGIN = RemoteJobOrigin(RemoteRepositoryOrigin(GrpcServerCodeLocationOrigin("user_code", 4000, location_name="bench"),
                                                "__repository__"), "collect_job")


def months(n: int) -> list[str]:
    return [date(2000 + i // 12, i % 12 + 1, 1).isoformat() for i in range(n)]


def seed(instance: dg.DagsterInstance, month_keys: list[str]) -> None:
    for pipeline in PIPELINES:
        for i, month in enumerate(month_keys):
            instance.report_runless_asset_event(dg.AssetMaterialization(
                f"{pipeline}_batches", partition=month,
                metadata={"batch_ids": [f"batch_{pipeline}_{month}_{k}" for k in range(3)], "requests": 1150}))
            if i % 2 == 0:
                instance.report_runless_asset_event(dg.AssetMaterialization(f"{pipeline}_results", partition=month))


def sensor_tick(instance: dg.DagsterInstance, cursor: dict[str, int | None]) -> int:
    """The sensor's reads: new batches materializations, then one 'collected since?' lookup each."""
    pending = 0
    for pipeline in PIPELINES:
        while True:
            page = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey(f"{pipeline}_batches"), after_storage_id=cursor.get(pipeline)),
                limit=PAGE, ascending=True)
            for record in page.records:
                cursor[pipeline] = record.storage_id
                collected = instance.fetch_materializations(
                    dg.AssetRecordsFilter(dg.AssetKey(f"{pipeline}_results"),
                                          asset_partitions=[record.partition_key or ""],
                                          after_storage_id=record.storage_id), limit=1)
                pending += not collected.records
            if not page.has_more:
                break
    return pending


def launch_runs(instance: dg.DagsterInstance, month_keys: list[str]) -> None:
    for month in month_keys:
        run = instance.create_run_for_job(collect_job, tags={"dagster/partition": month}, remote_job_origin=ORIGIN)
        instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


@contextmanager
def sqlite_instance() -> Iterator[dg.DagsterInstance]:
    home = Path(tempfile.mkdtemp(prefix="bench_sqlite_"))
    (home / "dagster.yaml").write_text(f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
                                       "telemetry:\n  enabled: false\n")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def postgres_instance() -> Iterator[dg.DagsterInstance]:
    home = Path(tempfile.mkdtemp(prefix="bench_postgres_"))
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    try:
        with running_postgres(durable=True) as server:
            os.environ.update(server.dagster_env())
            with dg.DagsterInstance.from_config(str(home)) as instance:
                yield instance
    finally:
        shutil.rmtree(home, ignore_errors=True)


def measure(instance: dg.DagsterInstance, n_months: int, repeats: int) -> dict[str, float]:
    month_keys = months(n_months)
    results: dict[str, float] = {}
    start = time.perf_counter()
    seed(instance, month_keys)
    results["seed: write materializations (all)"] = time.perf_counter() - start

    pending = sensor_tick(instance, {})
    assert pending == len(PIPELINES) * (n_months // 2), pending
    results["sensor tick, fresh cursor"] = median_seconds(lambda: sensor_tick(instance, {}), repeats)
    warm: dict[str, int | None] = {}
    sensor_tick(instance, warm)
    results["sensor tick, nothing new"] = median_seconds(lambda: sensor_tick(instance, dict(warm)), repeats)
    start = time.perf_counter()
    launch_runs(instance, month_keys)
    results[f"create + enqueue {n_months} runs"] = time.perf_counter() - start
    queued = RunsFilter(statuses=[DagsterRunStatus.QUEUED])
    assert len(instance.get_run_records(filters=queued)) == n_months
    results["run queue poll (read queued runs)"] = median_seconds(
        lambda: instance.get_run_records(filters=queued), repeats)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with sqlite_instance() as instance:
        sqlite = measure(instance, args.months, args.repeats)
    with postgres_instance() as instance:
        postgres = measure(instance, args.months, args.repeats)
    materializations = len(PIPELINES) * (args.months + (args.months + 1) // 2)
    print(f"{len(PIPELINES)} pipelines x {args.months} months: {materializations} materializations, "
          f"{args.months} runs; medians of {args.repeats} (writes timed once)")
    print(f"{'operation':40} {'sqlite ms':>10} {'postgres ms':>12} {'postgres/sqlite':>16}")
    for name, baseline in sqlite.items():
        print(f"{name:40} {baseline * 1000:10.1f} {postgres[name] * 1000:12.1f} {postgres[name] / baseline:15.2f}x")


if __name__ == "__main__":
    main()

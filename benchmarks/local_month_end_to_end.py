"""One full month of the bundled data, every shipped pipeline, end to end on the local engine, timed.

    .venv/bin/python benchmarks/local_month_end_to_end.py [--month 2024-03-01] [--docs-per-month 0]

It loads the code location's definitions (the defs folder: embeddings, sentiment, titles, reports), runs
`submit_month` for the month, then ticks `batch_sensor` the way the daemon does, running each run it requests
(the collects, any retries) in this process, until every pipeline-month is done. Everything goes to a fresh
temporary data folder. ``--docs-per-month 0`` takes all of the month's documents (about 1,150 reviews).
Prints the wall time, the requests per pipeline, and what the sentiment labels came to.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_month(month: str, timeout: float) -> tuple[float, Path]:
    from batch_assets.ledger.store import Ledger
    from batch_assets.settings import PlatformSettings

    defs = dg.load_from_defs_folder(path_within_project=PROJECT_ROOT)
    settings = PlatformSettings.from_env()
    instance = dg.DagsterInstance.ephemeral()
    start = time.perf_counter()
    result = defs.resolve_job_def("submit_month").execute_in_process(partition_key=month, instance=instance)
    assert result.success
    cursor: str | None = None
    deadline = time.monotonic() + timeout
    while True:
        sensor = defs.resolve_sensor_def("batch_sensor")
        with dg.build_sensor_context(instance=instance, cursor=cursor,
                                     resources={"batch_api": defs.resources["batch_api"],
                                                "ledger": defs.resources["ledger"]}) as context:
            tick = sensor(context)
        cursor = tick.cursor
        for request in tick.run_requests or []:
            run = defs.resolve_job_def(request.job_name).execute_in_process(
                partition_key=request.partition_key, instance=instance)
            assert run.success, request.job_name
            print(f"{time.perf_counter() - start:7.1f} s  {request.job_name} done", flush=True)
        with Ledger(settings.ledger_url) as ledger:
            open_plans = len(ledger.open_plans())
        if not tick.run_requests and not open_plans:
            return time.perf_counter() - start, settings.duckdb_path
        if time.monotonic() > deadline:
            raise TimeoutError(f"the month was not done after {timeout:.0f} s")
        time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--month", default="2024-03-01")
    parser.add_argument("--docs-per-month", type=int, default=0, help="0: all of the month's documents")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)  # the runs' step-by-step lines would drown the timings
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"BATCH_ASSETS_DATA_DIR": str(Path(tmp) / "data"),
                           "BATCH_ASSETS_DOCS_PER_MONTH": str(args.docs_per_month),
                           "BATCH_ASSETS_LOCAL_MODELS": "real", "BATCH_ASSETS_PROVIDER": "local",
                           "BATCH_ASSETS_LOCAL_WORKER_IDLE_SECONDS": "10"})
        seconds, duckdb_path = run_month(args.month, args.timeout)
        with duckdb.connect(str(duckdb_path), read_only=True) as con:
            outcomes = con.sql("SELECT pipeline, count(*) FILTER (outcome = 'succeeded'), count(*) "
                               "FROM batch_outcomes GROUP BY ALL ORDER BY 1").fetchall()
            labels = con.sql("SELECT coalesce(label, 'invalid'), count(*) FROM document_labels "
                             "GROUP BY ALL ORDER BY 2 DESC").fetchall()
            [(accuracy,)] = con.sql("SELECT avg((label = gold_label)::INT) FROM document_labels "
                                    "WHERE gold_label IS NOT NULL").fetchall()
    print(f"month {args.month}: every pipeline done in {seconds / 60:.1f} min ({seconds:.0f} s)")
    for pipeline, succeeded, total in outcomes:
        print(f"  {pipeline:<11} {succeeded}/{total} items succeeded")
    print("  sentiment labels: " + ", ".join(f"{label} {n}" for label, n in labels)
          + (f"; accuracy {accuracy:.1%}" if accuracy is not None else ""))


if __name__ == "__main__":
    main()

"""Benchmark: one batch-sensor tick (`pipelines.monitor.advance`, what `batch_sensor` runs) over a big ledger.

Seeds a ledger with N pipeline-months (four pipelines; most months done, one in ten waiting on three batches
that have just ended), and a local Batch API whose account holds those batches under 1,000 newer batches of
someone else. Then times, on a copy of that state each time:
  - the discovery tick: a fresh sensor cursor (first tick after a deploy or a reset) looks at every month;
  - a steady tick: a cursor from the last tick, nothing changed since, the same batches to poll.
and counts the Batch API calls each tick made (through the SDK). Limit: the discovery tick of 1,000
pipeline-months in <= 2 s; calls bounded by the pages holding tracked batches.

    .venv/bin/python benchmarks/bench_sensor.py                 # 1,000 pipeline-months, medians of 3
    .venv/bin/python benchmarks/bench_sensor.py --months 2500 --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout, installed or not

from batch_assets.batching.client import BatchClient  # noqa: E402
from batch_assets.ledger.records import FileState, MonthState, NewFile, PlanKind, PlanState  # noqa: E402
from batch_assets.ledger.store import Ledger, ledger_url  # noqa: E402
from batch_assets.local.api import LocalBatchAPI  # noqa: E402
from batch_assets.local.config import EngineConfig  # noqa: E402
from batch_assets.local.store import new_id  # noqa: E402
from batch_assets.local.transport import local_openai_client  # noqa: E402
from batch_assets.pipelines.monitor import advance  # noqa: E402

PIPELINES = ("embeddings", "sentiment", "reports", "titles")
FILES_PER_MONTH = 3
OTHER_NEWER_BATCHES = 1000
DISCOVERY_LIMIT_SECONDS = 2.0


def _ledger(data_dir: Path) -> Ledger:
    return Ledger(ledger_url(data_dir, env={}))


def _insert_batches(api: LocalBatchAPI, n: int) -> list[str]:
    ids = [new_id("batch_") for _ in range(n)]
    created = int(time.time())
    with api.store.transaction() as con:
        con.executemany(
            "INSERT INTO batches (id, status, endpoint, input_file_id, completion_window, created_at, expires_at,"
            " settings, total, completed) VALUES (?, 'completed', '/v1/embeddings', 'file-x', '24h', ?, ?, '{}',"
            " 1, 1)", [(batch_id, created, created + 86400) for batch_id in ids])
    return ids


def seed(state: Path, n_months: int) -> int:
    """The ledger and the local API's state under ``state``; returns how many batches the sensor tracks."""
    api = LocalBatchAPI(EngineConfig(state_dir=state / "local_api", model_backend="fake"))
    tracked = 0
    with _ledger(state) as ledger:
        for i in range(n_months):
            pipeline = PIPELINES[i % len(PIPELINES)]
            k = i // len(PIPELINES)
            month = date(2000 + k // 12, k % 12 + 1, 1).isoformat()
            files = [NewFile(f"{pipeline}{month}{j}", f"{pipeline}/{month}/{j}.jsonl", "/v1/embeddings", "m",
                             1000, 50_000) for j in range(FILES_PER_MONTH)]
            plan = ledger.add_plan(pipeline=pipeline, month=month, attempt=1, kind=PlanKind.INITIAL,
                                   endpoint="/v1/embeddings", settings="{}", n_items=3000, files=files)
            waiting = i % 10 == 0
            batch_ids = _insert_batches(api, FILES_PER_MONTH)
            state_after = FileState.SUBMITTED if waiting else FileState.COLLECTED
            ledger.update_files([(plan.plan_id, f.sha256, {"state": state_after, "batch_id": batch_id,
                                                           "batch_status": "in_progress" if waiting else "completed",
                                                           "submitted_at": time.time(), "completed": 0 if waiting
                                                           else 1000, "total": 1000})
                                 for f, batch_id in zip(files, batch_ids, strict=True)])
            ledger.set_plan_state(plan.plan_id, PlanState.SUBMITTED if waiting else PlanState.COLLECTED)
            ledger.update_month(pipeline, month, state=MonthState.WAITING if waiting else MonthState.DONE,
                                summary=None if waiting else orjson.dumps({"by_state": {"succeeded": 3000}}).decode())
            tracked += FILES_PER_MONTH if waiting else 0
    _insert_batches(api, OTHER_NEWER_BATCHES)
    api.close()
    return tracked


def tick(template: Path, *, fresh_cursor: bool) -> tuple[float, int, int]:
    """Seconds, API calls and collect runs decided by one tick over a copy of ``template``."""
    work = Path(tempfile.mkdtemp(prefix="bench_sensor_"))
    try:
        shutil.copytree(template, work, dirs_exist_ok=True)
        client = BatchClient(local_openai_client(EngineConfig(state_dir=work / "local_api", model_backend="fake")))
        with client, _ledger(work) as ledger:
            start = time.perf_counter()
            decisions = advance(client, ledger, changed_since=-1.0 if fresh_cursor else time.time())
            seconds = time.perf_counter() - start
        return seconds, decisions.api_calls, len(decisions.collect)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--months", type=int, default=1000, help="pipeline-months in the ledger")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    template = Path(tempfile.mkdtemp(prefix="bench_sensor_template_"))
    try:
        start = time.perf_counter()
        tracked = seed(template, args.months)
        seeded = time.perf_counter() - start
        print(f"{args.months} pipeline-months ({tracked} batches running, under {OTHER_NEWER_BATCHES} newer batches "
              f"of another team); seeded in {seeded:.1f} s; medians of {args.repeats}")
        print(f"{'tick':34} {'seconds':>8} {'API calls':>10} {'collects':>9} {'limit':>7}")
        for name, fresh in (("discovery (fresh cursor)", True), ("steady (nothing changed)", False)):
            runs = [tick(template, fresh_cursor=fresh) for _ in range(args.repeats)]
            seconds = statistics.median(r[0] for r in runs)
            limit = f"{DISCOVERY_LIMIT_SECONDS:.1f} s" if fresh else ""
            print(f"{name:34} {seconds:8.2f} {runs[0][1]:10d} {runs[0][2]:9d} {limit:>7}")
    finally:
        shutil.rmtree(template, ignore_errors=True)


if __name__ == "__main__":
    main()

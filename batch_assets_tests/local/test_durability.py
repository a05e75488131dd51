"""Batches run in a detached worker: they progress with nobody polling, resume after a crash, and run once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from batch_assets.local.config import EngineConfig, FaultConfig
from batch_assets.local.store import StateStore
from batch_assets.local.transport import local_openai_client
from batch_assets_tests.local.helpers import embedding_lines, read_lines, submit, wait_terminal, write_jsonl

pytestmark = pytest.mark.e2e


def _wait_row(store: StateStore, batch_id: str, done: callable, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = store.get_batch_row(batch_id)
        if row and done(row):
            return row
        assert time.monotonic() < deadline, f"batch stuck: {row and row['status']}"
        time.sleep(0.1)


def test_batch_progresses_after_its_creator_exits(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    write_jsonl(tmp_path / "in.jsonl", embedding_lines([f"text {i}" for i in range(10)]))
    script = (
        "import sys; from batch_assets.local.config import EngineConfig;"
        "from batch_assets.local.transport import local_openai_client;"
        f"c = local_openai_client(EngineConfig(state_dir={str(state_dir)!r}, worker_idle_seconds=2));"
        f"f = c.files.create(file=open({str(tmp_path / 'in.jsonl')!r}, 'rb'), purpose='batch');"
        "print(c.batches.create(input_file_id=f.id, endpoint='/v1/embeddings', completion_window='24h').id)"
    )
    batch_id = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                              text=True).stdout.strip()
    # Nobody calls the API from here on: we only read the state folder.
    row = _wait_row(StateStore(state_dir), batch_id, lambda r: r["status"] == "completed")
    assert row["completed"] == 10


def test_crashed_worker_is_resumed_and_runs_each_item_once(tmp_path: Path) -> None:
    config = EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=2,
                          faults=FaultConfig(item_delay_seconds=0.1))
    client = local_openai_client(config)
    batch = submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines([f"t {i}" for i in range(30)])),
                   "/v1/embeddings")
    store = StateStore(config.state_dir)
    _wait_row(store, batch.id, lambda r: r["completed"] >= 5)
    os.kill(int((config.state_dir / "worker.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    stalled = store.get_batch_row(batch.id)
    assert stalled["status"] == "in_progress" and stalled["completed"] < 30
    batch = wait_terminal(client, batch.id)  # the next API call starts a new worker, which resumes
    assert batch.status == "completed" and batch.request_counts.completed == 30
    custom_ids = [line["custom_id"] for line in read_lines(client, batch.output_file_id)]
    assert sorted(custom_ids) == sorted(f"doc-{i}" for i in range(30))


def test_competing_workers_never_run_a_batch_twice(tmp_path: Path) -> None:
    config = EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=1)
    client = local_openai_client(config)
    batch = submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines([f"t {i}" for i in range(50)])),
                   "/v1/embeddings")
    log = (config.state_dir / "worker.log").open("ab")
    workers = [subprocess.Popen([sys.executable, "-m", "batch_assets.local.worker", str(config.state_dir),
                                 "--idle-seconds", "1"], stdout=log, stderr=subprocess.STDOUT) for _ in range(3)]
    for worker in workers:
        worker.wait(timeout=120)
    log.close()
    batch = wait_terminal(client, batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == 50
    log_text = (config.state_dir / "worker.log").read_text()
    assert log_text.count("started") >= 4  # the API's worker and our three competitors
    assert log_text.count(f"running {batch.id}") == 1
    lines = read_lines(client, batch.output_file_id)
    assert len(lines) == len({orjson.dumps(line["custom_id"]) for line in lines}) == 50

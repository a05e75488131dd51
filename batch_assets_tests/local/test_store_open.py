"""Clients that open the local engine's state at the same instant (two submits, the worker starting) all get it:
switching a new database to WAL is retried, not reported as "database is locked"."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from batch_assets.local.store import StateStore


def _open(state_dir: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        StateStore(Path(state_dir)).close()
        results.put("ok")
    except BaseException as error:  # noqa: BLE001 - reported to the test
        results.put(repr(error))


def test_stores_opened_at_once_on_a_new_folder_all_open(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_no in range(10):
        barrier, results = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_open, args=(str(tmp_path / f"state{round_no}"), barrier, results))
                     for _ in range(6)]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    assert outcomes == ["ok"] * 60, [o for o in outcomes if o != "ok"][:3]

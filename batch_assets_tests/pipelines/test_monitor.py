"""The sensor's polling: Batch API calls per tick are bounded by the pages that hold tracked batches, whatever
their age among the account's other batches (counted through the SDK against the local API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import orjson
import pytest

from batch_assets.batching.client import BatchClient
from batch_assets.ledger.records import FileState, NewFile, PlanKind, PlanState
from batch_assets.ledger.store import Ledger, ledger_url
from batch_assets.local.api import LocalBatchAPI
from batch_assets.local.config import EngineConfig
from batch_assets.local.store import new_id
from batch_assets.local.transport import LOCAL_BASE_URL, LocalTransport
from batch_assets.pipelines.monitor import advance

MONTH = "2024-03-01"


class CountingTransport(LocalTransport):
    def __init__(self, api: LocalBatchAPI) -> None:
        super().__init__(api)
        self.calls: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[LocalBatchAPI, BatchClient, CountingTransport]]:
    api = LocalBatchAPI(EngineConfig(state_dir=tmp_path / "local_api", model_backend="fake"))
    transport = CountingTransport(api)
    sdk = openai.OpenAI(api_key="local", base_url=LOCAL_BASE_URL, max_retries=0,
                        http_client=httpx2.Client(transport=transport, base_url=LOCAL_BASE_URL))
    with BatchClient(sdk) as client:
        yield api, client, transport


def _add_batches(api: LocalBatchAPI, n: int, status: str = "completed") -> list[str]:
    """Batches written straight into the local store (creating thousands through the API would be slow),
    oldest first; the API lists them newest first as OpenAI does."""
    ids = [new_id("batch_") for _ in range(n)]
    created = int(time.time())
    with api.store.transaction() as con:
        con.executemany(
            "INSERT INTO batches (id, status, endpoint, input_file_id, completion_window, created_at, expires_at,"
            " settings, total, completed) VALUES (?, ?, '/v1/embeddings', 'file-x', '24h', ?, ?, ?, 1, 1)",
            [(batch_id, status, created, created + 86400, orjson.dumps({}).decode()) for batch_id in ids])
    return ids


def _track(ledger: Ledger, batch_ids: list[str]) -> None:
    """One submitted plan whose files run as ``batch_ids`` (submitted in that order)."""
    plan = ledger.add_plan(pipeline="p", month=MONTH, attempt=1, kind=PlanKind.INITIAL, endpoint="/v1/embeddings",
                           settings="{}", n_items=len(batch_ids),
                           files=[NewFile(f"sha{i}", f"f{i}.jsonl", "/v1/embeddings", "m", 1, 10)
                                  for i in range(len(batch_ids))])
    start = time.time() - len(batch_ids)
    ledger.update_files([(plan.plan_id, f"sha{i}", {"state": FileState.SUBMITTED, "batch_id": batch_id,
                                                    "submitted_at": start + i})
                         for i, batch_id in enumerate(batch_ids)])
    ledger.set_plan_state(plan.plan_id, PlanState.SUBMITTED)


def _tick(client: BatchClient, transport: CountingTransport, ledger: Ledger) -> int:
    transport.calls.clear()
    decisions = advance(client, ledger)
    assert decisions.api_calls == len(transport.calls)
    return len(transport.calls)


def test_tracked_batches_buried_under_a_thousand_newer_ones(
        local: tuple[LocalBatchAPI, BatchClient, CountingTransport], tmp_path: Path) -> None:
    api, client, transport = local
    _add_batches(api, 500)  # older history
    tracked = _add_batches(api, 1000)
    _add_batches(api, 1000)  # another team's batches, all newer
    with Ledger(ledger_url(tmp_path, {})) as ledger:
        _track(ledger, tracked)
        calls = _tick(client, transport, ledger)
        assert calls <= 25, transport.calls
        assert {f.state for f in ledger.files(plan_id=1)} == {FileState.ENDED}
        assert [d.n_ended for d in advance(client, ledger).collect] == [1000]


def test_tracked_batches_newest_take_one_call_per_page(
        local: tuple[LocalBatchAPI, BatchClient, CountingTransport], tmp_path: Path) -> None:
    api, client, transport = local
    _add_batches(api, 2000)
    tracked = _add_batches(api, 250)
    with Ledger(ledger_url(tmp_path, {})) as ledger:
        _track(ledger, tracked)
        assert _tick(client, transport, ledger) == 3


def test_tracked_batches_scattered_among_others(
        local: tuple[LocalBatchAPI, BatchClient, CountingTransport], tmp_path: Path) -> None:
    api, client, transport = local
    tracked: list[str] = []
    for _ in range(5):  # five clusters of ours, each under 400 of someone else's
        tracked += _add_batches(api, 20)
        _add_batches(api, 400)
    with Ledger(ledger_url(tmp_path, {})) as ledger:
        _track(ledger, tracked)
        # Per cluster: at most one page of others, one retrieve and one page with ours.
        assert _tick(client, transport, ledger) <= 5 * 3
        assert {f.state for f in ledger.files(plan_id=1)} == {FileState.ENDED}


def test_the_ledgers_order_need_not_match_the_apis(
        local: tuple[LocalBatchAPI, BatchClient, CountingTransport], tmp_path: Path) -> None:
    api, client, transport = local
    tracked = _add_batches(api, 3)
    with Ledger(ledger_url(tmp_path, {})) as ledger:
        _track(ledger, list(reversed(tracked)))  # the ledger's order disagrees with the API's
        assert _tick(client, transport, ledger) <= 3
        assert {f.state for f in ledger.files(plan_id=1)} == {FileState.ENDED}

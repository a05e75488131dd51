"""The worker runs batches side by side and a line the model fails on fails alone (real engine, and
the runner in process with models that raise)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from batch_assets.batching.requests import json_schema_response_format, label_schema
from batch_assets.local.config import EngineConfig, FaultConfig
from batch_assets.local.models import LocalModels
from batch_assets.local.runner import MAX_STARTS_WITHOUT_RESULT, BatchRunner
from batch_assets.local.store import StateStore
from batch_assets.local.transport import local_openai_client
from batch_assets.pipelines.catalog import SENTIMENT_LABELS, SENTIMENT_PROMPT
from batch_assets.sources import rotten_tomatoes_documents
from batch_assets_tests.local.helpers import chat_lines, embedding_lines, read_lines, submit, wait_terminal, write_jsonl

SENTIMENT_FORMAT = json_schema_response_format("sentiment", label_schema(SENTIMENT_LABELS))


def _deep_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _sentiment_lines(texts: list[str], prefix: str, max_tokens: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "max_tokens": max_tokens, "temperature": 0, "seed": 7,
                      "response_format": SENTIMENT_FORMAT,
                      "messages": [{"role": "system", "content": SENTIMENT_PROMPT},
                                   {"role": "user", "content": f"Review: {text}"}]}}
            for i, text in enumerate(texts)]


@pytest.mark.e2e
def test_poison_lines_fail_alone_and_the_worker_goes_on(tmp_path: Path) -> None:
    config = EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=5)
    client = local_openai_client(config)
    lines = chat_lines(["Name a colour.", "Say hi."], max_tokens=4)
    lines.append({"custom_id": "deep-schema", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}],
                           "response_format": {"type": "json_schema",
                                               "json_schema": {"name": "deep", "schema": _deep_schema(300)}}}})
    lines.append({"custom_id": "number-part", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "gpt-4o-mini", "max_tokens": 4,
                           "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}})
    # orjson refuses to write something this deep; the standard library does not.
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    batch = wait_terminal(client, submit(client, tmp_path / "in.jsonl", "/v1/chat/completions").id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 2)
    errors = {line["custom_id"]: line["response"] for line in read_lines(client, batch.error_file_id)}
    assert errors["deep-schema"]["status_code"] == 400
    assert "schema" in errors["deep-schema"]["body"]["error"]["message"]
    assert errors["number-part"]["status_code"] == 400
    assert errors["number-part"]["body"]["error"]["param"] == "messages[0].content[0].text"
    later = wait_terminal(client, submit(client, write_jsonl(tmp_path / "later.jsonl", chat_lines(["Hi."],
                                                                                                  max_tokens=3)),
                                         "/v1/chat/completions").id)
    assert later.status == "completed" and later.request_counts.completed == 1
    log = (config.state_dir / "worker.log").read_text().splitlines()
    runners = {line.split()[2] for line in log if " running batch_" in line}
    assert len(runners) == 1  # one worker ran both batches: it never crashed



@pytest.mark.e2e
def test_a_small_batch_finishes_while_a_large_one_runs_and_answers_are_compact(tmp_path: Path) -> None:
    config = EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=5)
    client = local_openai_client(config)
    reviews = [text for text in rotten_tomatoes_documents()["text"].to_list()[::11] if 0 < len(text) < 160][:30]
    large = submit(client, write_jsonl(tmp_path / "large.jsonl", _sentiment_lines(reviews, "large", 20)),
                   "/v1/chat/completions")
    small = submit(client, write_jsonl(tmp_path / "small.jsonl", _sentiment_lines(reviews[:1], "small", 20)),
                   "/v1/chat/completions")
    small = wait_terminal(client, small.id)
    assert small.status == "completed"
    assert client.batches.retrieve(large.id).status == "in_progress"  # the large one is still running
    large = wait_terminal(client, large.id)
    assert large.status == "completed" and large.request_counts.completed == 30
    contents = [line["response"]["body"]["choices"][0]["message"]["content"]
                for line in read_lines(client, large.output_file_id)]
    labels = [orjson.loads(content)["label"] for content in contents]  # every answer parses at max_tokens=20
    assert set(labels) <= set(SENTIMENT_LABELS)
    assert all(content == content.strip() and "\n" not in content for content in contents)


class _RaisingChat:
    name = "local/raising-chat"

    def complete(self, messages: list[dict], **_: Any) -> Any:
        if "poison" in str(messages[-1]["content"]):
            raise RuntimeError("llama.cpp blew up")
        return LocalModels("fake").chat.complete(messages)


def _runner_with(store: StateStore, chat: Any) -> BatchRunner:
    runner = BatchRunner(store, chat_engines=1, chat_slots=2)
    models = runner.models("fake")
    models._chat = chat  # the loader's slot: the next chat call uses this model
    return runner


def _create(store: StateStore, tmp_path: Path, lines: list[dict[str, Any]]) -> str:
    path = write_jsonl(tmp_path / "in.jsonl", lines)
    file_id = "file-test"
    store.file_path(file_id).write_bytes(path.read_bytes())
    store.add_file(file_id, "in.jsonl", "batch")
    config = EngineConfig(state_dir=store.state_dir, model_backend="fake")
    row = store.add_batch(endpoint="/v1/chat/completions", input_file_id=file_id, completion_window="24h",
                          window_seconds=3600, metadata=None, settings=config.batch_settings())
    return str(row["id"])


def test_a_model_exception_becomes_that_lines_500(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    batch_id = _create(store, tmp_path, chat_lines(["fine", "poison", "fine too"]))
    runner = _runner_with(store, _RaisingChat())
    runner.run_until_idle(timeout=30)
    runner.close()
    row = store.get_batch_row(batch_id)
    assert row is not None and row["status"] == "completed" and (row["completed"], row["failed"]) == (2, 1)
    [error] = [orjson.loads(line) for line in store.iter_item_results(batch_id, succeeded=False)]
    assert error["custom_id"] == "chat-1" and error["response"]["status_code"] == 500
    assert "RuntimeError: llama.cpp blew up" in error["response"]["body"]["error"]["message"]


def test_a_line_that_killed_the_worker_twice_is_not_run_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    batch_id = _create(store, tmp_path, chat_lines(["a", "b", "c"]))
    runner = _runner_with(store, LocalModels("fake").chat)
    runner.step(wait=0)  # validates
    store.mark_started([(batch_id, 2)] * MAX_STARTS_WITHOUT_RESULT)  # as if line 2 crashed two workers
    runner.run_until_idle(timeout=30)
    runner.close()
    row = store.get_batch_row(batch_id)
    assert row is not None and (row["completed"], row["failed"]) == (2, 1)
    [error] = [orjson.loads(line) for line in store.iter_item_results(batch_id, succeeded=False)]
    assert error["custom_id"] == "chat-1" and "died while running this request" in \
        error["response"]["body"]["error"]["message"]


def test_batches_take_turns(tmp_path: Path) -> None:
    """Chunks are handed out from every running batch in turn, not batch after batch."""
    store = StateStore(tmp_path / "state")
    first = _create(store, tmp_path, chat_lines([f"first {i}" for i in range(20)]))
    store.file_path("file-second").write_bytes(store.file_path("file-test").read_bytes())
    store.add_file("file-second", "in.jsonl", "batch")
    settings = EngineConfig(state_dir=store.state_dir, model_backend="fake").batch_settings()
    second = str(store.add_batch(endpoint="/v1/chat/completions", input_file_id="file-second",
                                 completion_window="24h", window_seconds=3600, metadata=None,
                                 settings=settings)["id"])
    runner = BatchRunner(store, chat_engines=1, chat_slots=1)
    finished: list[str] = []
    deadline = time.monotonic() + 30
    while runner.step(wait=0.05) and time.monotonic() < deadline:
        for batch_id in (first, second):
            row = store.get_batch_row(batch_id)
            if row and row["status"] == "completed" and batch_id not in finished:
                finished.append(batch_id)
                other = store.get_batch_row(second if batch_id == first else first)
                assert other is not None and other["completed"] >= 15  # both moved along together
    runner.close()
    assert sorted(finished) == sorted([first, second])


def test_a_batch_whose_input_is_gone_fails_and_the_others_go_on(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    broken = _create(store, tmp_path, chat_lines(["a"]))
    store.file_path("file-test").unlink()  # e.g. removed by hand from the state folder
    store.file_path("file-ok").write_bytes(write_jsonl(tmp_path / "ok.jsonl", chat_lines(["b", "c"])).read_bytes())
    store.add_file("file-ok", "ok.jsonl", "batch")
    settings = EngineConfig(state_dir=store.state_dir, model_backend="fake").batch_settings()
    fine = str(store.add_batch(endpoint="/v1/chat/completions", input_file_id="file-ok", completion_window="24h",
                               window_seconds=3600, metadata=None, settings=settings)["id"])
    runner = BatchRunner(store, chat_engines=1, chat_slots=2)
    runner.run_until_idle(timeout=30)
    runner.close()
    broken_row, fine_row = store.get_batch_row(broken), store.get_batch_row(fine)
    assert broken_row is not None and broken_row["status"] == "failed"
    assert "could not start this batch" in broken_row["errors"]
    assert fine_row is not None and fine_row["status"] == "completed" and fine_row["completed"] == 2


def test_a_forced_expiry_cuts_an_embeddings_chunk(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.file_path("file-emb").write_bytes(write_jsonl(tmp_path / "e.jsonl", embedding_lines(
        [f"text {i}" for i in range(10)])).read_bytes())
    store.add_file("file-emb", "e.jsonl", "batch")
    config = EngineConfig(state_dir=store.state_dir, model_backend="fake", faults=FaultConfig(expire_after_items=4))
    batch_id = str(store.add_batch(endpoint="/v1/embeddings", input_file_id="file-emb", completion_window="24h",
                                   window_seconds=3600, metadata=None, settings=config.batch_settings())["id"])
    runner = BatchRunner(store, embedding_chunk=8)
    runner.run_until_idle(timeout=30)
    runner.close()
    row = store.get_batch_row(batch_id)
    assert row is not None and row["status"] == "expired" and row["completed"] == 4 and row["failed"] == 6

"""The batch core's Responses path end to end on the real local engine: prepare_responses_requests ->
request files -> BatchClient -> the worker (real chat model) -> parse_batch_results."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from batch_assets.batching.client import BatchClient
from batch_assets.batching.prepare import prepare_responses_requests
from batch_assets.batching.protocol import RESPONSES_URL
from batch_assets.batching.request_files import BatchLimits, write_request_files
from batch_assets.batching.requests import json_schema_text_format, label_schema
from batch_assets.batching.results import parse_batch_results
from batch_assets.local.config import EngineConfig
from batch_assets.local.transport import local_openai_client
from batch_assets_tests.local.helpers import TERMINAL

pytestmark = pytest.mark.e2e

LABELS = ["positive", "negative", "neutral"]


def test_responses_requests_run_and_parse(tmp_path: Path) -> None:
    texts = {"d1": "A moving, beautifully acted film.", "d2": "Dull, overlong and badly written.",
             "d3": "Two brothers inherit a farm."}
    prepared = prepare_responses_requests(
        list(texts), list(texts.values()), "gpt-4o-mini", instructions="Classify the sentiment of the review.",
        custom_id_prefix="s-", max_output_tokens=16, temperature=0,
        text_format=json_schema_text_format("sentiment", label_schema(LABELS)))
    (request_file,) = write_request_files(prepared, tmp_path / "requests", limits=BatchLimits(), file_stem="s")
    client = BatchClient(local_openai_client(EngineConfig(state_dir=tmp_path / "state", worker_idle_seconds=3)))
    batch = client.create(client.upload(request_file.path).id, RESPONSES_URL, metadata={"test": "responses"})
    deadline = time.monotonic() + 120
    while batch.status not in TERMINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)
        batch = client.retrieve(batch.id)
    assert batch.status == "completed" and batch.output_file_id
    output = tmp_path / "output.jsonl"
    client.download(batch.output_file_id, output)
    rows = parse_batch_results(url=RESPONSES_URL, expected_custom_ids=request_file.custom_ids, output_path=output,
                               error_path=None, batch_status=batch.status)
    assert rows.height == 3 and set(rows["outcome"]) == {"succeeded"}
    assert set(rows["response_model"]) == {"local/SmolLM2-135M-Instruct"}
    assert (rows["prompt_tokens"] > 10).all() and (rows["completion_tokens"] <= 16).all()
    assert set(rows["finish_reason"]) <= {"stop", "length"}
    assert rows["content"].str.starts_with("{").all()  # the text.format JSON schema shaped every answer

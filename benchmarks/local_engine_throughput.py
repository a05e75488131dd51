"""Local engine throughput: requests/s through the Batch API (upload → completed → download) for
embeddings and chat, against the same models called directly in this process (the baseline).

    .venv/bin/python benchmarks/local_engine_throughput.py [--embeddings 400] [--chat 40]

The ratio says what the API, the detached worker and the files cost on top of the model itself.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from batch_assets.batching.requests import json_schema_response_format, label_schema
from batch_assets.local.config import EngineConfig
from batch_assets.local.models import LocalModels
from batch_assets.local.transport import local_openai_client
from batch_assets.pipelines.catalog import SENTIMENT_LABELS, SENTIMENT_PROMPT
from batch_assets.sources import rotten_tomatoes_documents

LABEL_FORMAT = json_schema_response_format("sentiment", label_schema(SENTIMENT_LABELS))


def _bodies(kind: str, texts: list[str]) -> list[dict]:
    if kind == "embeddings":
        return [{"model": "text-embedding-3-small", "input": text} for text in texts]
    return [{"model": "gpt-4o-mini", "max_tokens": 16, "temperature": 0, "response_format": LABEL_FORMAT,
             "messages": [{"role": "system", "content": SENTIMENT_PROMPT}, {"role": "user", "content": text}]}
            for text in texts]


def through_batch_api(kind: str, texts: list[str], state_dir: Path) -> float:
    client = local_openai_client(EngineConfig(state_dir=state_dir, worker_idle_seconds=5))
    url = "/v1/embeddings" if kind == "embeddings" else "/v1/chat/completions"
    path = state_dir.parent / f"{kind}.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}) + b"\n"
                              for i, body in enumerate(_bodies(kind, texts))))
    start = time.perf_counter()
    batch = client.batches.create(input_file_id=client.files.create(file=path.open("rb"), purpose="batch").id,
                                  endpoint=url, completion_window="24h")  # type: ignore[arg-type]
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == len(texts), batch
    client.files.content(batch.output_file_id).read()
    return len(texts) / (time.perf_counter() - start)


def direct(kind: str, texts: list[str], models: LocalModels) -> float:
    bodies = _bodies(kind, texts)
    if kind == "embeddings":
        models.embedder.embed(texts[:8])  # load outside the timing, as the worker's load is amortised
        start = time.perf_counter()
        for i in range(0, len(texts), 32):
            models.embedder.embed(texts[i:i + 32])
    else:
        models.chat.complete([{"role": "user", "content": "hi"}], max_tokens=1)
        start = time.perf_counter()
        for body in bodies:
            models.chat.complete(body["messages"], max_tokens=16, temperature=0, response_format=LABEL_FORMAT)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=int, default=400)
    parser.add_argument("--chat", type=int, default=40)
    args = parser.parse_args()
    reviews = rotten_tomatoes_documents()["text"].to_list()
    models = LocalModels("real")
    print(f"{'endpoint':<12}{'requests':>9}{'batch API req/s':>17}{'direct req/s':>14}{'ratio':>8}")
    for kind, n in (("embeddings", args.embeddings), ("chat", args.chat)):
        texts = reviews[::7][:n]  # a spread of plot summaries and reviews, not the long first rows
        with tempfile.TemporaryDirectory() as tmp:
            api_rate = through_batch_api(kind, texts, Path(tmp) / "state")
        direct_rate = direct(kind, texts, models)
        print(f"{kind:<12}{n:>9}{api_rate:>17.1f}{direct_rate:>14.1f}{api_rate / direct_rate:>8.2f}")


if __name__ == "__main__":
    main()

"""Local engine throughput: requests/s through the Batch API (upload → create → wait → download, the detached
worker the assets use) against the same models called one request at a time in this process (the baseline).

    .venv/bin/python benchmarks/local_engine_throughput.py [--embeddings 1000] [--chat 120] [--rounds 1]

(`--chat 0` or `--embeddings 0` leaves one out; with several rounds the median ratio is printed too.)

Requests are the shipped pipelines' own (the embeddings and sentiment declarations build them), over a spread of
the bundled reviews. Both sides run the same models (the same all-MiniLM-L6-v2 int8 ONNX file with the same session
options but for threads, the same SmolLM2 GGUF). The baseline runs each request through the engine's request
handler on one chat engine (one slot, the default threads) and on one embeddings session (ONNX Runtime's default,
one thread per core), one text per run; the worker runs one chat engine per core with parallel slots, and one
single-thread embeddings session per core on chunks of 8 texts sorted by token count. Both sides start their clock
with the model loaded, as a running platform has it: the baseline answers one request first, the worker a batch of
8 requests (its seconds, starting the worker process and loading the model, are printed beside). Targets on 2
cores: chat and embeddings >= 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from batch_assets.local.config import EngineConfig
from batch_assets.local.execute import answer_one, embed_many
from batch_assets.local.models import LocalModels
from batch_assets.local.transport import local_openai_client
from batch_assets.pipelines.catalog import EMBEDDINGS, SENTIMENT
from batch_assets.pipelines.spec import PipelineSpec
from batch_assets.sources import rotten_tomatoes_documents

KINDS: dict[str, PipelineSpec] = {"embeddings": EMBEDDINGS, "chat": SENTIMENT}


def pipeline_requests(spec: PipelineSpec, texts: list[str]) -> list[dict[str, Any]]:
    """Batch input lines exactly as the pipeline writes them."""
    items = pl.DataFrame({"item_id": [f"doc-{i}" for i in range(len(texts))], "text": texts})
    return [{"custom_id": r.custom_id, "method": "POST", "url": r.url,
             "body": orjson.loads(r.body_json) if r.body_json else dict(r.body)}
            for r in spec.build_requests(items, spec.defaults)]


def _run_batch(client: Any, lines: list[dict[str, Any]], path: Path) -> None:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=lines[0]["url"], completion_window="24h")
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts.completed == len(lines), batch
    assert batch.output_file_id is not None
    client.files.content(batch.output_file_id).read()


def through_batch_api(lines: list[dict[str, Any]], workdir: Path) -> tuple[float, float]:
    """(requests/s of the batch with the worker running and its model loaded, seconds the warm-up batch of
    8 requests took: starting the worker process and loading the model)."""
    client = local_openai_client(EngineConfig(state_dir=workdir / "state", worker_idle_seconds=30))
    start = time.perf_counter()
    _run_batch(client, lines[:8], workdir / "warm_up.jsonl")
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    _run_batch(client, lines, workdir / "in.jsonl")
    return len(lines) / (time.perf_counter() - start), warm_up


def one_at_a_time(lines: list[dict[str, Any]]) -> float:
    models = LocalModels("real")
    url = lines[0]["url"]
    answer: Callable[[dict[str, Any]], Any]
    if url == "/v1/embeddings":
        def answer(body: dict[str, Any]) -> Any:
            return embed_many(models, [body])
    else:
        def answer(body: dict[str, Any]) -> Any:
            return answer_one(models, url, body)
    answer(lines[0]["body"])  # load the model outside the timing, as the worker's load is amortised
    start = time.perf_counter()
    for line in lines:
        status, _ = answer(line["body"])[0] if url == "/v1/embeddings" else answer(line["body"])
        assert status == 200
    rate = len(lines) / (time.perf_counter() - start)
    models.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embeddings", type=int, default=1000)
    parser.add_argument("--chat", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=1, help="repeat both measurements (the machine is shared)")
    args = parser.parse_args()
    reviews = [text for text in rotten_tomatoes_documents()["text"].to_list() if text]
    print(f"{'endpoint':<12}{'requests':>9}{'batch API req/s':>17}{'one at a time req/s':>21}{'ratio':>8}"
          f"{'worker start s':>16}")
    ratios: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for kind, n in (("embeddings", args.embeddings), ("chat", args.chat)):
            if n <= 0:
                continue
            lines = pipeline_requests(KINDS[kind], reviews[::7][:n])  # a spread of reviews and plot summaries
            baseline = one_at_a_time(lines)
            with tempfile.TemporaryDirectory() as tmp:
                api_rate, warm_up = through_batch_api(lines, Path(tmp))
            ratios.setdefault(kind, []).append(api_rate / baseline)
            print(f"{kind:<12}{n:>9}{api_rate:>17.2f}{baseline:>21.2f}{api_rate / baseline:>8.2f}{warm_up:>16.2f}",
                  flush=True)
    if args.rounds > 1:
        for kind, measured in ratios.items():
            print(f"{kind:<12} median ratio of {len(measured)} rounds: {statistics.median(measured):.2f} "
                  f"(target 1.5)")


if __name__ == "__main__":
    main()

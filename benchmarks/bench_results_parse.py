"""Benchmark: batch result files -> outcome table, ``parse_batch_results`` vs a ``json.loads`` loop.

Generates N result lines in OpenAI's format into a temp dir (shuffled, ~2% HTTP errors in the
error file), then times both ways of building the same outcome table and prints the ratio.
Peak RSS is printed after the fast parse (run before the baseline, so it is the parse's peak).

    .venv/bin/python benchmarks/bench_results_parse.py                 # 1,000,000 chat lines
    .venv/bin/python benchmarks/bench_results_parse.py --n 200000
    .venv/bin/python benchmarks/bench_results_parse.py --endpoint embeddings --n 50000 --no-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout, installed or not

from batch_assets.batching.protocol import (  # noqa: E402
    BATCH_CANCELLED_CODE,
    BATCH_EXPIRED_CODE,
    CHAT_COMPLETIONS_URL,
    EMBEDDINGS_URL,
)
from batch_assets.batching.results import MISSING_RESULT_CODE, RESULT_SCHEMA, parse_batch_results  # noqa: E402

CONTENT = '{"label": "positive", "reason": "The reviewer praises the acting and the pacing."}'


def _chat_body(i: int) -> dict:
    return {
        "id": f"chatcmpl-{i:012d}", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0123456789",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100 + i % 50, "completion_tokens": 10 + i % 7, "total_tokens": 117,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def _embedding_body(vector: np.ndarray) -> dict:
    return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector.tolist()}],
            "model": "text-embedding-3-small", "usage": {"prompt_tokens": 50, "total_tokens": 50}}


def generate(directory: Path, n: int, endpoint: str, dims: int) -> tuple[list[str], Path, Path]:
    """Write output + error files with n lines in shuffled order; return (expected ids, paths)."""
    rng = np.random.default_rng(0)
    expected = [f"item-{i:08d}" for i in range(n)]
    output, error = directory / "output.jsonl", directory / "error.jsonl"
    with open(output, "wb") as out, open(error, "wb") as err:
        for i in rng.permutation(n).tolist():
            cid = expected[i]
            if i % 50 == 7:
                body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
                response = {"status_code": 429, "request_id": f"req_{i}", "body": body}
                target = err
            else:
                body = _chat_body(i) if endpoint == CHAT_COMPLETIONS_URL else _embedding_body(
                    rng.standard_normal(dims, dtype=np.float32) * 0.03)
                response = {"status_code": 200, "request_id": f"req_{i}", "body": body}
                target = out
            target.write(orjson.dumps({"id": f"batch_req_{i:024d}", "custom_id": cid, "response": response,
                                       "error": None}) + b"\n")
    return expected, output, error


def _classify(line: dict) -> dict:
    response, error = line.get("response"), line.get("error") or {}
    status = response.get("status_code") if response else None
    body = (response or {}).get("body") or {}
    body_error = body.get("error") or {}
    if status is not None:
        outcome = "succeeded" if 200 <= status <= 299 else "http_error"
    else:
        outcome = {BATCH_EXPIRED_CODE: "expired", BATCH_CANCELLED_CODE: "cancelled"}.get(error.get("code"), "missing")
    usage = body.get("usage") or {}
    choice = (body.get("choices") or [{}])[0]
    data = (body.get("data") or [{}])[0]
    return {
        "custom_id": line["custom_id"], "outcome": outcome, "status_code": status,
        "error_code": error.get("code") or body_error.get("code") or body_error.get("type"),
        "error_message": error.get("message") or body_error.get("message"),
        "response_model": body.get("model"), "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"), "finish_reason": choice.get("finish_reason"),
        "content": (choice.get("message") or {}).get("content"), "embedding": data.get("embedding"),
    }


def baseline(expected: list[str], paths: list[Path]) -> pl.DataFrame:
    """The naive way: json.loads every line, keep the best line per id, build the table."""
    rank = {"succeeded": 0, "http_error": 1, "expired": 2, "cancelled": 3, "missing": 4}
    best: dict[str, dict] = {}
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for raw in fh:
                if raw.strip():
                    row = _classify(json.loads(raw))
                    seen = best.get(row["custom_id"])
                    if seen is None or rank[row["outcome"]] < rank[seen["outcome"]]:
                        best[row["custom_id"]] = row
    absent = dict.fromkeys(RESULT_SCHEMA.names())
    rows = [best.get(cid) or {**absent, "custom_id": cid, "outcome": "missing", "error_code": MISSING_RESULT_CODE}
            for cid in expected]
    return pl.DataFrame(rows, schema=RESULT_SCHEMA, orient="row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="result lines (default 1,000,000)")
    parser.add_argument("--endpoint", choices=["chat", "embeddings"], default="chat")
    parser.add_argument("--dims", type=int, default=1536, help="embedding dimensions (embeddings only)")
    parser.add_argument("--no-baseline", action="store_true", help="time parse_batch_results only")
    args = parser.parse_args()
    endpoint = CHAT_COMPLETIONS_URL if args.endpoint == "chat" else EMBEDDINGS_URL

    with tempfile.TemporaryDirectory(prefix="bench_results_") as tmp:
        start = time.perf_counter()
        expected, output, error = generate(Path(tmp), args.n, endpoint, args.dims)
        size_mb = (output.stat().st_size + error.stat().st_size) / 1e6
        print(f"generated {args.n:,} {args.endpoint} lines ({size_mb:,.0f} MB) in {time.perf_counter() - start:.1f} s")

        start, cpu = time.perf_counter(), time.process_time()
        fast = parse_batch_results(url=endpoint, expected_custom_ids=expected, output_path=output,
                                   error_path=error, batch_status="completed")
        fast_s, fast_cpu = time.perf_counter() - start, time.process_time() - cpu
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"parse_batch_results: {fast_s:8.2f} s wall {fast_cpu:8.2f} s CPU (all threads)   "
              f"peak RSS so far {peak_mb:,.0f} MB")
        print(f"  outcomes {fast.group_by('outcome').len().sort('outcome').rows()}")
        if args.no_baseline:
            return

        start, cpu = time.perf_counter(), time.process_time()
        slow = baseline(expected, [output, error])
        slow_s, slow_cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"json.loads loop:     {slow_s:8.2f} s wall {slow_cpu:8.2f} s CPU")
        print(f"ratio (json.loads loop / parse_batch_results): {slow_s / fast_s:.1f}x wall, "
              f"{slow_cpu / fast_cpu:.1f}x CPU time   (load average now {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores: other work on the machine lowers the wall ratio)")
        same = fast.drop("embedding").sort("custom_id").equals(slow.drop("embedding").sort("custom_id"))
        print(f"same outcome table: {same}")


if __name__ == "__main__":
    main()

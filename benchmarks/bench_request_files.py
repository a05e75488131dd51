"""Benchmark: a month's request building as the `<p>_requests` asset runs it, for every shipped pipeline.

    .venv/bin/python benchmarks/bench_request_files.py                       # 200,000 items, medians of 3
    .venv/bin/python benchmarks/bench_request_files.py --n 1000000 --repeats 1 --pipelines sentiment

For each pipeline (embeddings, sentiment, reports and the YAML titles pipeline), on unique review-like texts
(or, for reports, distinct company metrics), each case in its own process:
  - floor: tiktoken alone over the distinct strings the requests hold, the better of one core and all cores;
  - baseline: what a first version would write: a `json.dumps` loop building each line, with exact tiktoken
    counts per line (a prompt shared by every line counted once), into one file, on one core;
  - ours: `plan_month` (pipelines/plan.py) on a fresh ledger and warehouse, what the asset calls: the
    pipeline's request builder, content-addressed files split under the limits, body hashes, the estimate,
    the ledger plan and the batch_requests rows in DuckDB. The chunks ahead are counted in forked children
    (batching/forked.py): "child cpu" is their CPU time, which the process's own numbers leave out (their memory
    beyond the pages they share with it is each chunk's texts, a few tens of MB).
Target: ours <= 1.5x the floor; peak RSS at 1M documents <= 1 GB above the input frame.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable from a checkout, installed or not
sys.path.insert(0, str(ROOT / "benchmarks"))

import polars as pl  # noqa: E402
from workload import (  # noqa: E402
    MONTH,
    PIPELINE_NAMES,
    Measured,
    items_frame,
    machine,
    mb,
    measure,
    open_ledger,
    report,
    shipped_specs,
)

from batch_assets.batching.encodings import count_text_tokens, default_num_threads, encoding_for_model  # noqa: E402
from batch_assets.batching.request_files import PreparedRequest  # noqa: E402
from batch_assets.batching.tokens import REPLY_PRIMING_TOKENS, TOKENS_PER_MESSAGE, response_format_tokens  # noqa: E402
from batch_assets.pipelines.plan import item_frame, plan_month  # noqa: E402
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings  # noqa: E402

TARGET = 1.5


def _template(spec: PipelineSpec, items: pl.DataFrame) -> PreparedRequest:
    """The pipeline's request for the first item: the body every baseline line is shaped like."""
    return next(iter(spec.build_requests(item_frame(spec, items.head(1)), spec.defaults)))


def _varying_strings(spec: PipelineSpec, items: pl.DataFrame) -> tuple[list[str], list[str]]:
    """(the per-item string of each request, the strings every request shares), as the builder makes them."""
    template = _template(spec, items)
    body = template.body
    if spec.name == "reports":
        from batch_assets.pipelines.catalog import metrics_prompt
        return [metrics_prompt(row) for row in items.iter_rows(named=True)], [body["messages"][0]["content"]]
    texts = items["text"].to_list()
    if "messages" in body:
        prefix = body["messages"][-1]["content"][: -len(texts[0])]
        return [prefix + t for t in texts], [m["content"] for m in body["messages"][:-1]]
    if "instructions" in body:
        return texts, [body["instructions"]]
    return texts, []


def run_floor(spec: PipelineSpec, items: pl.DataFrame) -> None:
    varying, shared = _varying_strings(spec, items)
    strings = list(dict.fromkeys(varying + shared))
    model = spec.defaults.model
    encoding_for_model(model).encode_ordinary("warm up")

    def floor() -> dict[str, float]:
        timings = {}
        for threads in sorted({1, default_num_threads()}):
            start = time.perf_counter()
            count_text_tokens(strings, model, num_threads=threads)
            timings[f"threads_{threads}"] = time.perf_counter() - start
        return timings

    report(floor)


def run_baseline(spec: PipelineSpec, items: pl.DataFrame, out: Path) -> None:
    template = _template(spec, items)
    body, url, model = template.body, template.url, spec.defaults.model
    encoding = encoding_for_model(model)
    ids = items[spec.item_id_column].to_list()
    encoding.encode_ordinary("warm up")

    def baseline() -> None:
        varying, shared = _varying_strings(spec, items)
        # Shared parts counted once: the chat formula's per-message overhead, the roles, the shared prompt.
        if "messages" in body:
            fixed = REPLY_PRIMING_TOKENS + response_format_tokens(body.get("response_format"), model)
            for message in body["messages"]:
                fixed += TOKENS_PER_MESSAGE + len(encoding.encode_ordinary(message["role"]))
            fixed += sum(len(encoding.encode_ordinary(s)) for s in shared)
        elif "instructions" in body:
            text = body.get("text") or {}
            fmt = text.get("format")
            schema_overhead = response_format_tokens(
                {"type": "json_schema", "json_schema": {"schema": fmt["schema"]}}, model) if fmt else 0
            fixed = (REPLY_PRIMING_TOKENS + 2 * TOKENS_PER_MESSAGE + len(encoding.encode_ordinary("developer"))
                     + len(encoding.encode_ordinary("user")) + len(encoding.encode_ordinary(body["instructions"]))
                     + schema_overhead)
        else:
            fixed = 0
        with open(out / "requests.jsonl", "w") as fh:
            for item_id, text in zip(ids, varying, strict=True):
                line_body: dict[str, Any]
                if "messages" in body:
                    *head, last = body["messages"]
                    line_body = {**body, "messages": [*head, {**last, "content": text}]}
                else:
                    line_body = {**body, "input": text}
                tokens = fixed + len(encoding.encode_ordinary(text))
                fh.write(json.dumps({"custom_id": item_id, "method": "POST", "url": url, "body": line_body}) + "\n")
                assert tokens > 0

    report(baseline)


def run_ours(spec: PipelineSpec, items: pl.DataFrame, out: Path) -> None:
    from batch_assets import warehouse

    encoding_for_model(spec.defaults.model).encode_ordinary("warm up")
    declaration = spec.output_table_declaration()
    con = warehouse.connect(out / "warehouse.duckdb", tables=[declaration] if declaration else [])
    ledger = open_ledger(out)

    def ours() -> dict[str, float]:
        planned = plan_month(spec, SubmissionSettings(spec.defaults), items, MONTH, ledger=ledger, con=con,
                             requests_dir=out / "requests", results_dir=out / "results")
        assert planned.n_requests == items.height, planned.message
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"files": len(planned.files), "bytes": planned.n_bytes,
                "child_cpu_seconds": children.ru_utime + children.ru_stime - children_before}

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_before = before.ru_utime + before.ru_stime

    try:
        report(ours)
    finally:
        con.close()
        ledger.close()


def case(pipeline: str, mode: str, n: int) -> None:
    spec = shipped_specs()[pipeline]
    items = items_frame(pipeline, n)
    out = Path(tempfile.mkdtemp(prefix="bench_requests_"))
    try:
        if mode == "floor":
            run_floor(spec, items)
        elif mode == "baseline":
            run_baseline(spec, items, out)
        else:
            run_ours(spec, items, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="items per month")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipelines", default=",".join(PIPELINE_NAMES))
    parser.add_argument("--case", help=argparse.SUPPRESS)  # pipeline:mode, run in a subprocess
    args = parser.parse_args()
    if args.case:
        pipeline, mode = args.case.split(":")
        case(pipeline, mode, args.n)
        return
    script = Path(__file__).resolve()
    print(f"request building, {args.n:,} unique items per month, medians of {args.repeats}; {machine()}")
    header = (f"{'pipeline':11} {'floor s':>8} {'(1 core':>8} {'all)':>6} {'baseline s':>11} {'ours s':>8} "
              f"{'ours/floor':>11} {'baseline/ours':>14} {'peak RSS':>9} {'above input':>12} {'child cpu':>10}")
    print(header)
    for pipeline in args.pipelines.split(","):
        runs: dict[str, list[Measured]] = {"floor": [], "baseline": [], "ours": []}
        for _ in range(args.repeats):
            for mode in runs:
                runs[mode].append(measure(script, ["--case", f"{pipeline}:{mode}", "--n", str(args.n)]))
        one = statistics.median(m.extra["threads_1"] for m in runs["floor"])
        every = statistics.median(min(m.extra.values()) for m in runs["floor"])
        all_cores = statistics.median(m.extra[max(m.extra)] for m in runs["floor"])
        floor = min(one, every)
        baseline = statistics.median(m.seconds for m in runs["baseline"])
        ours = statistics.median(m.seconds for m in runs["ours"])
        peak = max(m.peak_rss for m in runs["ours"])
        above = max(m.above_input for m in runs["ours"])
        child_cpu = statistics.median(m.extra.get("child_cpu_seconds", 0.0) for m in runs["ours"])
        verdict = "ok" if ours / floor <= TARGET else f"over {TARGET}"
        print(f"{pipeline:11} {floor:8.2f} {one:8.2f} {all_cores:6.2f} {baseline:11.2f} {ours:8.2f} "
              f"{ours / floor:10.2f}x {baseline / ours:13.2f}x {mb(peak):>9} {mb(above):>12} {child_cpu:9.2f}s  "
              f"{verdict}", flush=True)


if __name__ == "__main__":
    main()

"""Benchmark: collecting a month end to end, as the `<p>_collect` job runs it, against a json.loads loop.

    .venv/bin/python benchmarks/bench_collect.py                          # sentiment 200k lines, embeddings 20k
    .venv/bin/python benchmarks/bench_collect.py --chat 1000000 --embeddings 50000 --repeats 1

Seeds a month the way the platform leaves it when its batches have ended: the month's documents in the
warehouse, its plan from `plan_month` (request files, ledger, batch_requests), and for every request file a
completed batch on the local Batch API whose output file holds one answer per request (chat: a short JSON label;
embeddings: 1536 floats). Then, each case in its own process on a copy of that state:
  - ours: what the collect job's two steps run, each in a process of its own as Dagster runs them: the
    `<p>_results` asset's `collect_month` (download through the SDK, parse, outcomes and costs in DuckDB, the
    ledger), then the `<p>` asset's `month_answers` + `write_output_rows`; seconds added, peak RSS the larger;
  - baseline: download the same files, a `json.loads` loop building the same outcome, cost and output rows,
    then the same DuckDB writes;
  - lean: the least a collect writing these rows to DuckDB can do: download the same files, then DuckDB alone
    in the warehouse, its `read_json` straight into one INSERT of the outcome rows (joined to the plan's items)
    and one of the output rows, commit and close. No check of any kind (a missing, repeated or garbled line goes
    unnoticed), no ledger, no item status, no payload files for the cache: baseline/lean is about as far as any
    collect writing these rows gets past the baseline on this machine.
Target: ours >= 5x faster than the baseline at 1M chat lines and at 50k x 1536 embeddings; peak RSS <= 1 GB.
"""

from __future__ import annotations

import argparse
import json
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

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import polars as pl  # noqa: E402
from workload import MONTH, Measured, items_frame, machine, mb, measure, open_ledger, report, shipped_specs  # noqa: E402

from batch_assets import warehouse  # noqa: E402
from batch_assets.batching.client import BatchClient  # noqa: E402
from batch_assets.batching.pricing import actual_cost  # noqa: E402
from batch_assets.batching.results import result_line_columns  # noqa: E402
from batch_assets.ledger.records import FileState, MonthState, PlanState  # noqa: E402
from batch_assets.local.api import LocalBatchAPI  # noqa: E402
from batch_assets.local.config import EngineConfig  # noqa: E402
from batch_assets.local.store import new_id  # noqa: E402
from batch_assets.local.transport import local_openai_client  # noqa: E402
from batch_assets.pipelines.collect import collect_month, month_answers  # noqa: E402
from batch_assets.pipelines.outputs import write_output_rows  # noqa: E402
from batch_assets.pipelines.plan import plan_month  # noqa: E402
from batch_assets.pipelines.spec import PipelineSpec, SubmissionSettings  # noqa: E402
from batch_assets.warehouse.items import BATCH_SOURCE, plan_items  # noqa: E402

TARGET = 5.0
DIMS = 1536
LABELS = ("positive", "negative", "neutral")


def _chat_line(custom_id: str, i: int, model: str) -> bytes:
    content = orjson.dumps({"label": LABELS[i % 3]}).decode()
    return orjson.dumps({
        "id": f"batch_req_{i:08d}", "custom_id": custom_id, "error": None,
        "response": {"status_code": 200, "request_id": f"req_{i:08d}", "body": {
            "id": f"chatcmpl-{i:08d}", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 180 + i % 50, "completion_tokens": 6, "total_tokens": 186 + i % 50,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
            "system_fingerprint": "fp_bench"}}}) + b"\n"


def _embedding_lines(custom_ids: list[str], model: str, rng: np.random.Generator) -> bytes:
    vectors = rng.standard_normal((len(custom_ids), DIMS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return b"".join(orjson.dumps({
        "id": f"batch_req_{i:08d}", "custom_id": cid, "error": None,
        "response": {"status_code": 200, "request_id": f"req_{i:08d}", "body": {
            "object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vectors[i]}],
            "model": model, "usage": {"prompt_tokens": 40, "total_tokens": 40}}}},
        option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for i, cid in enumerate(custom_ids))


def seed(state: Path, spec: PipelineSpec, n: int) -> None:
    """A month whose batches all completed, as the sensor finds it before launching the collect job."""
    items = items_frame(spec.name, n)
    declaration = spec.output_table_declaration()
    con = warehouse.connect(state / "warehouse.duckdb", tables=[declaration] if declaration else [])
    api = LocalBatchAPI(EngineConfig(state_dir=state / "local_api", model_backend="fake"))
    rng = np.random.default_rng(7)
    with open_ledger(state) as ledger:
        warehouse.replace_partition(con, spec.source, MONTH, items)
        planned = plan_month(spec, SubmissionSettings(spec.defaults), items, MONTH, ledger=ledger, con=con,
                             requests_dir=state / "requests", results_dir=state / "results")
        assert planned.plan is not None, planned.message
        updates = []
        for f in planned.files:
            output_id = new_id("file-")
            custom_ids = f.custom_ids
            with open(api.store.file_path(output_id), "wb") as fh:
                if spec.endpoint == "/v1/embeddings":
                    for start in range(0, f.n_requests, 5000):
                        fh.write(_embedding_lines(list(custom_ids[start:start + 5000]), f.model, rng))
                else:
                    for i, cid in enumerate(custom_ids):
                        fh.write(_chat_line(cid, i, f.model))
            api.store.add_file(output_id, f"{output_id}.jsonl", "batch_output")
            batch_id = new_id("batch_")
            created = int(time.time())
            with api.store.transaction() as sql:
                sql.execute(
                    "INSERT INTO batches (id, status, endpoint, input_file_id, completion_window, created_at,"
                    " expires_at, completed_at, output_file_id, settings, total, completed) VALUES (?, 'completed',"
                    " ?, 'file-input', '24h', ?, ?, ?, ?, '{}', ?, ?)",
                    (batch_id, f.url, created, created + 86400, created, output_id, f.n_requests, f.n_requests))
            updates.append((planned.plan.plan_id, f.sha256, {
                "state": FileState.SUBMITTED, "batch_id": batch_id, "batch_status": "in_progress",
                "submitted_at": time.time()}))
        ledger.update_files(updates)
        ledger.set_plan_state(planned.plan.plan_id, PlanState.SUBMITTED)
        ledger.update_month(spec.name, MONTH.isoformat(), state=MonthState.WAITING)
    api.close()
    con.close()


def run_results_step(spec: PipelineSpec, state: Path) -> None:
    """What the `<p>_results` asset runs, in a process of its own (Dagster runs each step in its own process)."""
    def results_step() -> dict[str, float]:
        client = BatchClient(local_openai_client(EngineConfig(state_dir=state / "local_api", model_backend="fake")))
        with client, open_ledger(state) as ledger:
            declaration = spec.output_table_declaration()
            con = warehouse.connect(state / "warehouse.duckdb", tables=[declaration] if declaration else [])
            try:
                source = warehouse.read_table(con, spec.source, MONTH, columns=[spec.item_id_column])
                collected = collect_month(client, ledger, con, spec.name, MONTH, work_dir=state / "downloads",
                                          results_dir=state / "results", requests_dir=state / "requests",
                                          source_item_ids=source[spec.item_id_column])
                assert collected.report is not None and not collected.pending, collected.message
            finally:
                con.close()
        return {"items": collected.report.n_items}

    report(results_step)


def run_output_step(spec: PipelineSpec, state: Path) -> None:
    """What the `<p>` output asset runs, in a process of its own."""
    def output_step() -> dict[str, float]:
        with open_ledger(state) as ledger:
            declaration = spec.output_table_declaration()
            con = warehouse.connect(state / "warehouse.duckdb", tables=[declaration] if declaration else [])
            try:
                current = month_answers(ledger, con, spec.name, MONTH)
                assert current.settings is not None
                written = write_output_rows(con, spec, current.settings, current.classified, MONTH,
                                            state / "results")
            finally:
                con.close()
        return {"rows": written}

    report(output_step)


def run_baseline(spec: PipelineSpec, state: Path) -> None:
    """Download, a json.loads loop building the outcome, cost and output rows, the same DuckDB writes."""
    def baseline() -> dict[str, float]:
        client = BatchClient(local_openai_client(EngineConfig(state_dir=state / "local_api", model_backend="fake")))
        declaration = spec.output_table_declaration()
        con = warehouse.connect(state / "warehouse.duckdb", tables=[declaration] if declaration else [])
        written = 0
        with client, open_ledger(state) as ledger:
            for stored in ledger.files(pipeline=spec.name, month=MONTH.isoformat()):
                batch = client.retrieve(stored.batch_id or "")
                path = state / "downloads" / f"{batch.id}.jsonl"
                client.download(batch.output_file_id or "", path, durable=False)  # as ours
                expected = plan_items(con, spec.name, MONTH, [stored.plan_id], file_sha256s=[stored.sha256])
                item_of = {cid: (item_id, body) for cid, item_id, body in expected.select(
                    "custom_id", "item_id", "body_sha256").iter_rows()}
                outcomes: dict[str, list[Any]] = {k: [] for k in (
                    "custom_id", "item_id", "outcome", "status_code", "response_model", "prompt_tokens",
                    "completion_tokens", "cached_tokens", "reasoning_tokens", "body_sha256")}
                out: dict[str, list[Any]] = {"document_id": [], "model": [], "value": []}
                with open(path) as fh:
                    for raw in fh:
                        line = json.loads(raw)
                        body = line["response"]["body"]
                        usage = body.get("usage") or {}
                        item_id, body_sha = item_of[line["custom_id"]]
                        for key, value in (("custom_id", line["custom_id"]), ("item_id", item_id),
                                           ("outcome", "succeeded"), ("status_code", line["response"]["status_code"]),
                                           ("response_model", body["model"]),
                                           ("prompt_tokens", usage.get("prompt_tokens")),
                                           ("completion_tokens", usage.get("completion_tokens")),
                                           ("cached_tokens", (usage.get("prompt_tokens_details") or {})
                                            .get("cached_tokens")),
                                           ("reasoning_tokens", (usage.get("completion_tokens_details") or {})
                                            .get("reasoning_tokens")),
                                           ("body_sha256", body_sha)):
                            outcomes[key].append(value)
                        out["document_id"].append(item_id)
                        out["model"].append(body["model"])
                        if "choices" in body:
                            answer = json.loads(body["choices"][0]["message"]["content"])
                            out["value"].append(answer.get("label"))
                        else:
                            out["value"].append(body["data"][0]["embedding"])
                path.unlink()
                frame = pl.DataFrame(outcomes, schema_overrides={
                    "completion_tokens": pl.Int64, "cached_tokens": pl.Int64, "reasoning_tokens": pl.Int64}
                ).with_columns(
                    pl.col("status_code").cast(pl.Int32), pl.lit(stored.attempt, pl.Int32).alias("attempt"),
                    pl.lit(None, pl.String).alias("error_code"), pl.lit(None, pl.String).alias("error_message"),
                    pl.lit(batch.id).alias("batch_id"), pl.lit(stored.plan_id, pl.Int64).alias("plan_id"),
                    pl.lit(False).alias("final"), pl.lit(stored.model).alias("requested_model"),
                    pl.lit(BATCH_SOURCE).alias("source"))
                warehouse.replace_partition(con, "batch_outcomes", MONTH, frame, pipeline=spec.name,
                                            within={"batch_id": [batch.id]})
                prompt, completion = int(frame["prompt_tokens"].sum()), int(frame["completion_tokens"].sum() or 0)
                cost = actual_cost(stored.model, prompt, completion)
                warehouse.replace_partition(con, "batch_costs", MONTH, pl.DataFrame({
                    "batch_id": [batch.id], "model": [stored.model], "requests": [frame.height],
                    "prompt_tokens": [prompt], "completion_tokens": [completion], "cached_tokens": [0],
                    "reasoning_tokens": [0], "batch_usd": [cost.batch_usd if cost else None],
                    "standard_usd": [cost.standard_usd if cost else None],
                    "saving_usd": [cost.saving_usd if cost else None]}), pipeline=spec.name,
                    within={"batch_id": [batch.id]})
                rows = pl.DataFrame(out)
                if spec.name == "embeddings":
                    rows = rows.select("document_id", "model", pl.col("value").list.len().cast(pl.Int32).alias("dims"),
                                       pl.col("value").cast(pl.List(pl.Float32)).alias("embedding"),
                                       pl.lit(batch.id).alias("batch_id"), pl.lit(stored.attempt, pl.Int32)
                                       .alias("attempt"))
                else:
                    rows = rows.select("document_id", "model", pl.col("value").alias("label"),
                                       pl.lit(None, pl.String).alias("gold_label"),
                                       pl.lit(None, pl.String).alias("raw_content"),
                                       pl.lit(batch.id).alias("batch_id"),
                                       pl.lit(stored.attempt, pl.Int32).alias("attempt"))
                written += warehouse.replace_partition(con, spec.output_table, MONTH, rows,
                                                       within={"batch_id": [batch.id]})
        con.close()
        return {"rows": written}

    report(baseline)


def run_lean(spec: PipelineSpec, state: Path) -> None:
    """Download, then DuckDB alone in the warehouse: outcome rows and output rows each in one INSERT, no checks."""
    def lean() -> dict[str, float]:
        client = BatchClient(local_openai_client(EngineConfig(state_dir=state / "local_api", model_backend="fake")))
        paths = []
        with client, open_ledger(state) as ledger:
            for stored in ledger.files(pipeline=spec.name, month=MONTH.isoformat()):
                batch = client.retrieve(stored.batch_id or "")
                path = state / "downloads" / f"{batch.id}.jsonl"
                client.download(batch.output_file_id or "", path, durable=False)
                paths.append(str(path))
        declaration = spec.output_table_declaration()
        # More memory than ours gets (one INSERT of a month of vectors runs out in the warehouse's 512 MB):
        # a bound on time, not a way to run.
        con = warehouse.connect(state / "warehouse.duckdb", tables=[declaration] if declaration else [],
                                memory_limit="2GB")
        con.execute("SET preserve_insertion_order = false")  # rows land in any order: DuckDB buffers less
        embeddings = spec.endpoint == "/v1/embeddings"
        columns = result_line_columns(spec.endpoint)
        vector_field = "data STRUCT(embedding FLOAT[])[], "
        assert not embeddings or vector_field in columns
        # Vectors are parsed once, inside the INSERT of the output rows (a table of them would spill); the
        # outcome rows come from a read of the other fields.
        scalars = columns.replace(vector_field, "")
        answer = ("NULL::BIGINT AS completion_tokens, NULL::BIGINT AS cached_tokens, NULL::BIGINT AS reasoning_tokens"
                  if embeddings else
                  "response.body.choices[1].message.content AS content, "
                  "response.body.usage.completion_tokens AS completion_tokens, "
                  "response.body.usage.prompt_tokens_details.cached_tokens AS cached_tokens, "
                  "response.body.usage.completion_tokens_details.reasoning_tokens AS reasoning_tokens")
        batch_id = "regexp_extract(filename, '([^/]+)[.]jsonl$', 1) AS batch_id"
        read = "read_json($paths, format='newline_delimited', ignore_errors=true, filename=true, columns={})"
        con.execute(f"""
            CREATE TEMP TABLE parsed AS SELECT custom_id, response.status_code AS status_code,
                response.body.model AS response_model, response.body.usage.prompt_tokens AS prompt_tokens, {answer},
                {batch_id}
            FROM {read.format(scalars)}""", {"paths": paths})
        mine = f"r.custom_id = p.custom_id AND r.pipeline = '{spec.name}'"
        con.begin()
        con.execute(f"""
            INSERT INTO batch_outcomes BY NAME SELECT r.pipeline, r.month, r.custom_id, r.item_id, r.attempt,
                batch_id, '{BATCH_SOURCE}' AS source, 'succeeded' AS outcome, status_code, response_model,
                prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, r.plan_id, r.body_sha256,
                true AS final, '{spec.defaults.model}' AS requested_model
            FROM parsed p JOIN batch_requests r ON {mine}""")
        if embeddings:
            warehouse.schema.ensure_embeddings_table(con, DIMS)
            written = con.execute(f"""
                INSERT INTO {spec.output_table} BY NAME SELECT r.month, r.item_id AS document_id,
                    p.response.body.model AS model, {DIMS} AS dims,
                    p.response.body.data[1].embedding::FLOAT[{DIMS}] AS embedding, {batch_id}, r.attempt
                FROM {read.format(columns)} p JOIN batch_requests r ON {mine}""", {"paths": paths}).fetchall()[0][0]
        else:
            written = con.execute(f"""
                INSERT INTO {spec.output_table} BY NAME SELECT r.month, r.item_id AS document_id,
                    response_model AS model, json_extract_string(content, '$.label') AS label, batch_id, r.attempt
                FROM parsed p JOIN batch_requests r ON {mine}""").fetchall()[0][0]
        con.commit()
        con.close()
        return {"rows": written}

    report(lean)


STEPS = {"baseline": run_baseline, "lean": run_lean, "results": run_results_step, "output": run_output_step}
OURS = ("results", "output")  # the collect job's two steps, in order


def case(pipeline: str, mode: str, state: Path) -> None:
    STEPS[mode](shipped_specs()[pipeline], state)


def run_on_copy(script: Path, pipeline: str, modes: tuple[str, ...], template: Path) -> Measured:
    """The steps `modes` one after another, each in a fresh process, on one copy of the seeded state: the
    seconds add up, the peak RSS is the largest step's."""
    work = Path(tempfile.mkdtemp(prefix="bench_collect_"))
    try:
        shutil.copytree(template, work, dirs_exist_ok=True)
        steps = [measure(script, ["--case", f"{pipeline}:{mode}:{work}"]) for mode in modes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Measured(sum(m.seconds for m in steps), sum(m.cpu_seconds for m in steps),
                    max(m.peak_rss for m in steps), max(m.base_rss for m in steps), {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chat", type=int, default=200_000, help="sentiment answers in the month")
    parser.add_argument("--embeddings", type=int, default=20_000, help="1536-float embeddings in the month")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # pipeline:mode:template, run in a subprocess
    args = parser.parse_args()
    if args.case:
        pipeline, mode, template = args.case.split(":", 2)
        case(pipeline, mode, Path(template))
        return
    script = Path(__file__).resolve()
    print(f"collect end to end, medians of {args.repeats}; {machine()}")
    print(f"{'month':28} {'MB in':>7} {'baseline s':>11} {'lean s':>8} {'ours s':>8} {'baseline/lean':>14} "
          f"{'baseline/ours':>14} {'peak RSS':>9}")
    for pipeline, n in (("sentiment", args.chat), ("embeddings", args.embeddings)):
        if n <= 0:
            continue
        template = Path(tempfile.mkdtemp(prefix="bench_collect_template_"))
        try:
            seed(template, shipped_specs()[pipeline], n)
            size = sum(p.stat().st_size for p in (template / "local_api" / "files").iterdir())
            runs: dict[str, list[Measured]] = {"baseline": [], "lean": [], "ours": []}
            for _ in range(args.repeats):
                runs["baseline"].append(run_on_copy(script, pipeline, ("baseline",), template))
                runs["lean"].append(run_on_copy(script, pipeline, ("lean",), template))
                runs["ours"].append(run_on_copy(script, pipeline, OURS, template))
            baseline = statistics.median(m.seconds for m in runs["baseline"])
            lean = statistics.median(m.seconds for m in runs["lean"])
            ours = statistics.median(m.seconds for m in runs["ours"])
            peak = max(m.peak_rss for m in runs["ours"])
            label = f"{pipeline} {n:,}" + (f" x {DIMS}" if pipeline == "embeddings" else " lines")
            verdict = "ok" if baseline / ours >= TARGET else f"under {TARGET:g}x"
            print(f"{label:28} {size / 1e6:7,.0f} {baseline:11.2f} {lean:8.2f} {ours:8.2f} {baseline / lean:13.2f}x "
                  f"{baseline / ours:13.2f}x {mb(peak):>9}  {verdict}", flush=True)
        finally:
            shutil.rmtree(template, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Collecting ended batches: their files downloaded and parsed, their payloads to results Parquet files, their
outcome and cost rows to the warehouse, then the ledger. No Dagster.

Each batch's results land as one Parquet file of payloads (`<results dir>/<batch id>.parquet`) and as its rows in
`batch_outcomes` and `batch_costs`, replacing only that batch's rows, so collecting twice changes nothing and every
attempt is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final, Literal

import duckdb
import polars as pl
from openai.types import Batch

from batch_assets import warehouse
from batch_assets.batching.client import BatchClient
from batch_assets.batching.pricing import Cost, actual_cost
from batch_assets.batching.results import BatchResultFiles, parse_batches_results, usage_totals
from batch_assets.ledger.records import FileState, StoredFile, StoredPlan
from batch_assets.ledger.store import Ledger
from batch_assets.warehouse.items import BATCH_SOURCE, plan_items

Downloaded = tuple[StoredFile, Batch, dict[str, Path]]  # an ended batch and its files saved to disk
OUTCOME_COLUMNS = ("custom_id", "item_id", "attempt", "batch_id", "outcome", "status_code", "error_code",
                   "error_message", "response_model", "prompt_tokens", "completion_tokens", "cached_tokens",
                   "reasoning_tokens", "plan_id", "body_sha256")


# Downloaded JSON parsed per DuckDB read: batches are read together up to this size (files read together parse
# side by side on all cores); a read's rows are in memory at once, ~0.2-0.3x its JSON for labels and vectors.
_PARSE_GROUP_BYTES: Final = 160 * 1024 * 1024


class CollectError(RuntimeError):
    """Collecting could not finish; the message says what to do. Nothing collected so far is lost."""


@dataclass(frozen=True)
class BatchCollected:
    batch_id: str
    status: str
    model: str
    outcome_counts: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    actual: Cost  # what the provider bills (local models: $0)
    openai_equivalent: Cost | None  # the same tokens at the requested model's OpenAI price; None if unpriced


def collect_batches(client: BatchClient, ledger: Ledger, con: duckdb.DuckDBPyConnection, plan: StoredPlan,
                     ended: list[tuple[StoredFile, Batch]], work_dir: Path, results_dir: Path
                     ) -> list[BatchCollected]:
    """The plan's ended batches into the warehouse: their files downloaded and parsed a group at a time (one
    DuckDB read per group), each batch's payloads to its results Parquet file, then every batch's outcome and
    cost rows in one write (one delete and one insert for the lot, not one per batch), then the ledger. A crash
    before the ledger says collected only means collecting them again."""
    now = time.time()
    ledger.update_files([(plan.plan_id, stored.sha256, {
        "state": FileState.ENDED, "batch_status": batch.status, "ended_at": stored.ended_at or now})
        for stored, batch in ended])
    month = date.fromisoformat(plan.month)
    work_dir.mkdir(parents=True, exist_ok=True)
    collected: list[BatchCollected] = []
    costs: list[pl.DataFrame] = []
    group: list[Downloaded] = []
    # Each group's outcome rows wait in a Parquet file, not in memory, until all of them load in one statement.
    staged = Path(tempfile.mkdtemp(prefix=".outcomes-", dir=work_dir))
    try:
        for i, (stored, batch) in enumerate(ended):
            group.append((stored, batch, _download(client, stored, batch, work_dir)))
            group_bytes = sum(path.stat().st_size for *_, paths in group for path in paths.values())
            if group_bytes < _PARSE_GROUP_BYTES and i < len(ended) - 1:
                continue
            outcomes = []
            for (stored_, batch_, _), (parsed, items) in zip(group, _parse_group(con, plan, group), strict=True):
                _write_results(parsed, results_dir / f"{batch_.id}.parquet", plan, batch_.id)
                outcomes.append(_outcome_rows(parsed, items, batch_.id, stored_.model))
                batch_costs, actual, equivalent = _costs(parsed, batch_.id, stored_.model)
                costs.append(batch_costs)
                counts = {str(k): n for k, n in parsed["outcome"].value_counts().iter_rows()}
                collected.append(BatchCollected(
                    batch_.id, batch_.status, stored_.model, counts, int(batch_costs["prompt_tokens"].sum() or 0),
                    int(batch_costs["completion_tokens"].sum() or 0), actual, equivalent))
                del parsed
            _write_results(pl.concat(outcomes, rechunk=False), staged / f"{i:06d}.parquet", plan, batch.id,
                           compression="lz4")  # read once, soon: fast beats small
            del outcomes
            _delete_downloads(group)
            group = []
        batch_ids = [batch.id for _, batch in ended]
        warehouse.replace_partition_from_parquet(con, "batch_outcomes", month, sorted(staged.iterdir()),
                                                 pipeline=plan.pipeline, within={"batch_id": batch_ids})
    finally:
        _delete_downloads(group)
        shutil.rmtree(staged, ignore_errors=True)
    warehouse.replace_partition(con, "batch_costs", month, pl.concat(costs), pipeline=plan.pipeline,
                                within={"batch_id": batch_ids})
    now = time.time()
    ledger.update_files([(plan.plan_id, stored.sha256, {"state": FileState.COLLECTED, "collected_at": now})
                         for stored, _ in ended])
    return collected


def _download(client: BatchClient, stored: StoredFile, batch: Batch, work_dir: Path) -> dict[str, Path]:
    """One ended batch's output and error files, saved to `work_dir` (read once, then deleted)."""
    paths: dict[str, Path] = {}
    for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
        if file_id:
            paths[kind] = work_dir / f"{batch.id}_{kind}.jsonl"
            try:
                client.download(file_id, paths[kind], durable=False)  # a crash only means downloading again
            except OSError as exc:
                _delete_downloads([(stored, batch, paths)])
                raise CollectError(
                    f"could not save the {kind} file of batch {batch.id} to {work_dir} ({exc}): nothing was "
                    "lost, the results stay at the provider. Free some space (or fix the folder) and launch "
                    f"{stored.pipeline}_collect for {stored.month[:7]} again") from exc
    return paths


def _delete_downloads(group: list[Downloaded]) -> None:
    for *_, paths in group:  # the results Parquet file keeps every field the pipelines use
        for path in paths.values():
            path.unlink(missing_ok=True)


def _parse_group(con: duckdb.DuckDBPyConnection, plan: StoredPlan, group: list[Downloaded]
                 ) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Each downloaded batch of `group` parsed (one read of all their files): a RESULT_SCHEMA row per item of its
    request file, and the items of that file (custom_id, item_id, body_sha256, attempt, plan_id)."""
    month = date.fromisoformat(plan.month)
    expected = plan_items(con, plan.pipeline, month, [plan.plan_id],
                          file_sha256s=[stored.sha256 for stored, *_ in group],
                          columns=("file_sha256", "custom_id", "item_id", "body_sha256", "attempt", "plan_id"))
    by_file = {key[0]: rows for key, rows in expected.partition_by("file_sha256", as_dict=True,
                                                                   include_key=False).items()}
    empty = expected.drop("file_sha256").clear()
    del expected
    files, items = [], []
    for stored, batch, paths in group:
        first_error = batch.errors.data[0] if batch.errors and batch.errors.data else None
        items.append(by_file.get(stored.sha256, empty))
        files.append(BatchResultFiles(
            items[-1]["custom_id"], paths.get("output"), paths.get("error"), batch.status,
            getattr(first_error, "code", None), getattr(first_error, "message", None)))
    return list(zip(parse_batches_results(url=plan.endpoint, batches=files), items, strict=True))


def _outcome_rows(parsed: pl.DataFrame, items: pl.DataFrame, batch_id: str, requested_model: str) -> pl.DataFrame:
    """The `batch_outcomes` rows of one batch: each parsed row with its item's columns. Only the keys are joined,
    in the parsed rows' order, and the payload columns are left out first, so a month of vectors is not copied."""
    keyed = parsed.select("custom_id").join(items, on="custom_id", how="left", maintain_order="left")
    own = [c for c in OUTCOME_COLUMNS if c in parsed.columns]
    return parsed.select(own).hstack(keyed.select(c for c in OUTCOME_COLUMNS if c not in own and c in items.columns)
                                     ).select(*(pl.lit(batch_id).alias(c) if c == "batch_id" else pl.col(c)
                                                for c in OUTCOME_COLUMNS),
                                              pl.lit(False).alias("final"),
                                              pl.lit(requested_model).alias("requested_model"),
                                              pl.lit(BATCH_SOURCE).alias("source"))


def _write_results(parsed: pl.DataFrame, path: Path, plan: StoredPlan, batch_id: str, *,
                   compression: Literal["zstd", "lz4"] = "zstd") -> None:
    try:
        _write_parquet(parsed, path, compression)
    except OSError as exc:
        raise CollectError(
            f"could not write the results of batch {batch_id} to {path.parent} ({exc}): nothing was lost, "
            "the results stay at the provider. Free some space (or fix the folder) and launch "
            f"{plan.pipeline}_collect for {plan.month[:7]} again") from exc


def _write_parquet(frame: pl.DataFrame, path: Path, compression: Literal["zstd", "lz4"]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Small row groups: the writer buffers one group at a time (a month of 1536-float vectors in one group
        # took ~300 MB more memory to write).
        frame.write_parquet(tmp, row_group_size=4_096, compression=compression)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _costs(parsed: pl.DataFrame, batch_id: str, requested_model: str) -> tuple[pl.DataFrame, Cost, Cost | None]:
    rows = []
    actual_total, equivalent_total, equivalent_known = Cost.zero(), Cost.zero(), True
    for usage in usage_totals(parsed).iter_rows(named=True):
        model = usage["response_model"] or requested_model
        prompt, completion = int(usage["prompt_tokens"] or 0), int(usage["completion_tokens"] or 0)
        cached, reasoning = int(usage["cached_tokens"] or 0), int(usage["reasoning_tokens"] or 0)
        cost = actual_cost(model, prompt, completion, cached_tokens=cached, reasoning_tokens=reasoning)
        equivalent = actual_cost(requested_model, prompt, completion, cached_tokens=cached,
                                 reasoning_tokens=reasoning)
        if cost is not None:
            actual_total += cost
        if equivalent is None:
            equivalent_known = False
        else:
            equivalent_total += equivalent
        rows.append({"batch_id": batch_id, "model": model, "requests": int(usage["n"]), "prompt_tokens": prompt,
                     "completion_tokens": completion, "cached_tokens": cached, "reasoning_tokens": reasoning,
                     "batch_usd": cost.batch_usd if cost else None,
                     "standard_usd": cost.standard_usd if cost else None,
                     "saving_usd": cost.saving_usd if cost else None})
    frame = pl.DataFrame(rows, schema={
        "batch_id": pl.String, "model": pl.String, "requests": pl.Int64, "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64, "cached_tokens": pl.Int64, "reasoning_tokens": pl.Int64,
        "batch_usd": pl.Float64, "standard_usd": pl.Float64, "saving_usd": pl.Float64})
    return frame, actual_total, equivalent_total if equivalent_known else None



"""The steps every pipeline shares: requests → batches → results → output rows. No Dagster import.

Each step takes plain values and returns plain, picklable records, so the Dagster assets in `defs/`
only wire them together (and so a script can run a pipeline without Dagster).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from batch_assets.batching.client import BatchClient
from batch_assets.batching.pricing import Cost, UnknownModelPrice, actual_cost, estimate_cost
from batch_assets.batching.protocol import TERMINAL_BATCH_STATUSES
from batch_assets.batching.request_files import BatchLimits, RequestFile, write_request_files
from batch_assets.batching.requests import custom_ids_for
from batch_assets.batching.results import RESULT_SCHEMA, parse_batch_results, usage_totals
from batch_assets.pipelines.spec import PipelineSettings, PipelineSpec

IDEMPOTENCY_KEY = "batch_assets_key"
# Batches older than this are not searched when adopting one created before a crash (completion window).
ADOPTION_LOOKBACK_SECONDS = 26 * 3600


@dataclass(frozen=True)
class RequestManifest:
    pipeline: str
    month: date
    url: str
    model: str
    files: tuple[RequestFile, ...]
    items_path: Path  # parquet: custom_id, item_id
    n_items: int
    estimate: Cost | None  # None when the model has no price in the table

    @property
    def input_tokens(self) -> int:
        return sum(f.input_tokens for f in self.files)

    @property
    def n_bytes(self) -> int:
        return sum(f.n_bytes for f in self.files)


@dataclass(frozen=True)
class SubmittedBatch:
    batch_id: str
    input_file_id: str
    request_file: Path
    model: str
    n_requests: int
    attempt: int
    adopted: bool  # an earlier run had already created it (same idempotency key)


@dataclass(frozen=True)
class Submission:
    pipeline: str
    month: date
    url: str
    batches: tuple[SubmittedBatch, ...]
    manifest: RequestManifest

    @property
    def batch_ids(self) -> list[str]:
        return [b.batch_id for b in self.batches]


@dataclass(frozen=True)
class CollectedResults:
    pipeline: str
    month: date
    results_path: Path  # parquet: one row per item with outcome, payload and batch bookkeeping
    outcome_counts: dict[str, int]
    costs: pl.DataFrame = field(repr=False)  # rows for batch_costs
    actual: Cost  # what the provider bills (local models: $0)
    openai_equivalent: Cost | None  # the same tokens at the requested model's OpenAI price


# -- requests --------------------------------------------------------------------------------------------
def prepare_requests(spec: PipelineSpec, settings: PipelineSettings, items: pl.DataFrame, month: date,
                     out_dir: Path, *, limits: BatchLimits | None = None) -> RequestManifest:
    """Writes the month's request files (split under every limit) and the custom_id → item_id map."""
    if spec.item_id_column not in items.columns:
        raise ValueError(f"{spec.source} has no {spec.item_id_column!r} column; found {items.columns}")
    items = items.with_columns(pl.col(spec.item_id_column).cast(pl.String).alias("item_id"))
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.jsonl"):
        stale.unlink()
    files = write_request_files(spec.build_requests(items, settings), out_dir, limits=limits or BatchLimits(),
                                file_stem=f"{spec.name}-{month:%Y-%m}")
    id_map = pl.DataFrame({
        "custom_id": [cid for f in files for cid in f.custom_ids],
        "file_index": [i for i, f in enumerate(files) for _ in f.custom_ids],
    }, schema={"custom_id": pl.String, "file_index": pl.Int32})
    items_map = pl.DataFrame({"custom_id": custom_ids_for(items["item_id"].to_list()),
                              "item_id": items["item_id"]}, schema={"custom_id": pl.String, "item_id": pl.String})
    items_path = out_dir / "items.parquet"
    items_map.join(id_map, on="custom_id", how="left").write_parquet(items_path)
    input_tokens = sum(f.input_tokens for f in files)
    try:
        estimate = estimate_cost(settings.model, input_tokens, settings.expected_output_tokens * items.height)
    except UnknownModelPrice:
        estimate = None
    return RequestManifest(spec.name, month, spec.endpoint, settings.model, tuple(files), items_path, items.height,
                           estimate)


# -- batches ---------------------------------------------------------------------------------------------------
def idempotency_key(manifest: RequestManifest, request_file: RequestFile, attempt: int) -> str:
    """Same pipeline, month, attempt and file content → same key, so a re-run adopts instead of paying twice."""
    digest = hashlib.sha256()
    digest.update(f"{manifest.pipeline}|{manifest.month}|{attempt}|".encode())
    with request_file.path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:40]


def submit(client: BatchClient, manifest: RequestManifest, *, attempt: int = 1) -> Submission:
    """Uploads each request file and creates its batch, adopting a live batch with the same key."""
    submitted = []
    for request_file in manifest.files:
        key = idempotency_key(manifest, request_file, attempt)
        existing = [
            b for b in client.find_batches_by_metadata(IDEMPOTENCY_KEY, key,
                                                       created_after=int(time.time()) - ADOPTION_LOOKBACK_SECONDS)
            if b.status not in ("failed", "cancelled", "cancelling", "expired")
        ]
        if existing:
            batch = existing[0]
            submitted.append(SubmittedBatch(batch.id, batch.input_file_id, request_file.path, request_file.model,
                                            request_file.n_requests, attempt, adopted=True))
            continue
        uploaded = client.upload(request_file.path)
        batch = client.create(uploaded.id, manifest.url, metadata={
            IDEMPOTENCY_KEY: key, "pipeline": manifest.pipeline, "month": f"{manifest.month:%Y-%m}",
            "attempt": str(attempt), "file": request_file.path.name,
        })
        submitted.append(SubmittedBatch(batch.id, uploaded.id, request_file.path, request_file.model,
                                        request_file.n_requests, attempt, adopted=False))
    return Submission(manifest.pipeline, manifest.month, manifest.url, tuple(submitted), manifest)


# -- results ------------------------------------------------------------------------------------------------------
def collect(client: BatchClient, submission: Submission, work_dir: Path) -> CollectedResults:
    """Downloads (streamed) and parses every batch of the submission into one per-item table."""
    work_dir.mkdir(parents=True, exist_ok=True)
    items = pl.read_parquet(submission.manifest.items_path)
    per_batch, cost_rows = [], []
    actual_total, equivalent_total = Cost.zero(), Cost.zero()
    equivalent_known = True
    for submitted in submission.batches:
        batch = client.retrieve(submitted.batch_id)
        if batch.status not in TERMINAL_BATCH_STATUSES:
            raise RuntimeError(f"batch {batch.id} is still {batch.status}: wait for the sensor to request this run")
        paths = {}
        for kind, file_id in (("output", batch.output_file_id), ("error", batch.error_file_id)):
            if file_id:
                paths[kind] = work_dir / f"{batch.id}_{kind}.jsonl"
                client.download(file_id, paths[kind])
        first_error = (batch.errors.data or [None])[0] if batch.errors else None
        expected = pl.read_ndjson(submitted.request_file, schema={"custom_id": pl.String})["custom_id"]
        parsed = parse_batch_results(
            url=submission.url, expected_custom_ids=expected, output_path=paths.get("output"),
            error_path=paths.get("error"), batch_status=batch.status,
            batch_error_code=getattr(first_error, "code", None),
            batch_error_message=getattr(first_error, "message", None),
        ).with_columns(pl.lit(batch.id).alias("batch_id"), pl.lit(submitted.attempt, pl.Int32).alias("attempt"),
                       pl.lit(submitted.model).alias("requested_model"))
        per_batch.append(parsed)
        for usage in usage_totals(parsed).iter_rows(named=True):
            model = usage["response_model"] or submitted.model
            prompt, completion = int(usage["prompt_tokens"] or 0), int(usage["completion_tokens"] or 0)
            cost = actual_cost(model, prompt, completion)
            equivalent = actual_cost(submitted.model, prompt, completion)
            if cost is not None:
                actual_total += cost
            if equivalent is None:
                equivalent_known = False
            else:
                equivalent_total += equivalent
            cost_rows.append({
                "batch_id": batch.id, "model": model, "requests": int(usage["n"]), "prompt_tokens": prompt,
                "completion_tokens": completion, "batch_usd": cost.batch_usd if cost else None,
                "standard_usd": cost.standard_usd if cost else None, "saving_usd": cost.saving_usd if cost else None,
            })
    results = pl.concat(per_batch) if per_batch else None
    if results is None:
        results = RESULT_SCHEMA.to_frame().with_columns(
            pl.lit(None, pl.String).alias("batch_id"), pl.lit(None, pl.Int32).alias("attempt"),
            pl.lit(None, pl.String).alias("requested_model"))
    results = results.join(items.select("custom_id", "item_id"), on="custom_id", how="left")
    results_path = work_dir / "results.parquet"
    results.write_parquet(results_path)
    counts = {k: v for k, v in results.group_by("outcome").len().iter_rows()}
    costs = pl.DataFrame(cost_rows, schema={
        "batch_id": pl.String, "model": pl.String, "requests": pl.Int64, "prompt_tokens": pl.Int64,
        "completion_tokens": pl.Int64, "batch_usd": pl.Float64, "standard_usd": pl.Float64, "saving_usd": pl.Float64,
    })
    return CollectedResults(submission.pipeline, submission.month, results_path, counts, costs, actual_total,
                            equivalent_total if equivalent_known else None)


def outcome_rows(collected: CollectedResults) -> pl.DataFrame:
    """Rows for batch_outcomes: one per item and attempt."""
    return pl.scan_parquet(collected.results_path).select(
        pl.lit(collected.pipeline).alias("pipeline"), pl.lit(collected.month).alias("month"),
        "custom_id", "item_id", "attempt", "batch_id", "outcome", "status_code", "error_code", "error_message",
        "response_model", "prompt_tokens", "completion_tokens",
    ).collect()


def cost_rows(collected: CollectedResults) -> pl.DataFrame:
    return collected.costs.select(pl.lit(collected.pipeline).alias("pipeline"), pl.lit(collected.month).alias("month"),
                                  pl.all())


def output_rows(spec: PipelineSpec, settings: PipelineSettings, items: pl.DataFrame,
                collected: CollectedResults) -> pl.DataFrame:
    """The pipeline's output table rows for the month: its items joined with their results."""
    items = items.with_columns(pl.col(spec.item_id_column).cast(pl.String).alias("item_id"))
    results = pl.read_parquet(collected.results_path).drop("custom_id")
    joined = items.join(results, on="item_id", how="inner")
    return spec.build_outputs(joined, settings).select(pl.lit(collected.month).alias("month"), pl.all())

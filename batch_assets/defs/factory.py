"""Turns one PipelineSpec into its assets and jobs: requests → batches → (sensor) → results → output table."""


import dataclasses
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pydantic

from batch_assets import warehouse
from batch_assets.batching.protocol import EMBEDDINGS_URL, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from batch_assets.batching.request_files import BatchLimits
from batch_assets.defs.partitions import partition_month
from batch_assets.defs.resources import BatchAPIResource, WarehouseResource
from batch_assets.defs.source_assets import DUCKDB_POOL
from batch_assets.defs.table_schema import table_schema
from batch_assets.pipelines import steps
from batch_assets.pipelines.spec import PipelineSettings, PipelineSpec

AssetJob = Any  # what define_asset_job returns (its class is not exported by dagster)


def settings_config_class(spec: PipelineSpec) -> type[dg.Config]:
    """Run config the launchpad shows for this pipeline, defaults filled in from the declaration."""
    d = spec.defaults
    fields: dict[str, tuple[type, pydantic.fields.FieldInfo]] = {
        "model": (str, pydantic.Field(default=d.model, description="model the requests name")),
    }
    if spec.endpoint == EMBEDDINGS_URL:
        fields["dimensions"] = (int | None, pydantic.Field(default=d.dimensions, description="shorter vectors"))
    else:
        fields.update(
            system_prompt=(str, pydantic.Field(default=d.system_prompt, description="system message")),
            max_tokens=(int | None, pydantic.Field(default=d.max_tokens, description="answer length cap")),
            temperature=(float | None, pydantic.Field(default=d.temperature)),
            seed=(int | None, pydantic.Field(default=d.seed)),
        )
    # Per-file limits: OpenAI's by default; lower them for providers that need it, or set a token budget.
    fields.update(
        max_requests_per_file=(int, pydantic.Field(default=MAX_REQUESTS_PER_FILE, ge=1)),
        max_file_bytes=(int, pydantic.Field(default=MAX_FILE_BYTES, ge=1)),
        max_tokens_per_file=(int | None, pydantic.Field(
            default=None, description="input-token budget per file, e.g. your tier's enqueued-token limit")),
    )
    name = "".join(part.capitalize() for part in spec.name.split("_")) + "Settings"
    return pydantic.create_model(name, __base__=dg.Config, **fields)  # type: ignore[call-overload]


_LIMIT_FIELDS = ("max_requests_per_file", "max_file_bytes", "max_tokens_per_file")


def to_settings(spec: PipelineSpec, config: dg.Config) -> PipelineSettings:
    values = {k: v for k, v in config.model_dump().items() if k not in _LIMIT_FIELDS}
    return dataclasses.replace(spec.defaults, **values)


def to_limits(config: dg.Config) -> BatchLimits:
    values = config.model_dump()
    return BatchLimits(max_requests_per_file=values["max_requests_per_file"],
                       max_bytes_per_file=values["max_file_bytes"], max_tokens_per_file=values["max_tokens_per_file"])


def _cost_metadata(prefix: str, cost: object) -> dict[str, float]:
    if cost is None:
        return {}
    return {f"{prefix}_batch_usd": cost.batch_usd, f"{prefix}_standard_usd": cost.standard_usd,  # type: ignore[attr-defined]
            f"{prefix}_saving_usd": cost.saving_usd}  # type: ignore[attr-defined]


def build_pipeline(spec: PipelineSpec, partitions_def: dg.PartitionsDefinition,
                   run_tags: Mapping[str, str] | None = None) -> tuple[list[dg.AssetsDefinition], dict[str, AssetJob]]:
    """The pipeline's four assets, and its `submit` and `collect` jobs (their runs carry `run_tags`)."""
    if spec.output_schema is not None:
        warehouse.register_table(spec.output_table, dict(spec.output_schema), spec.output_key or ("month",))
    config_class = settings_config_class(spec)
    common = {"partitions_def": partitions_def, "group_name": spec.name}

    @dg.asset(name=spec.requests_asset, deps=[spec.source], kinds={"openai", "polars"}, pool=DUCKDB_POOL,
              description=f"{spec.description} Request files for the month, split under the Batch API limits, "
                          "with exact input tokens (OpenAI's tokenizer for the requested model; local models "
                          "tokenize differently) and the estimated cost at batch and standard prices.", **common)
    def requests(context: dg.AssetExecutionContext, config: config_class,  # type: ignore[valid-type]
                 warehouse_db: WarehouseResource) -> steps.RequestManifest:
        month = partition_month(context)
        with warehouse_db.connect() as con:
            items = warehouse.read_table(con, spec.source, month)
        manifest = steps.prepare_requests(spec, to_settings(spec, config), items, month,
                                          warehouse_db.work_dir("requests", spec.name, month),
                                          limits=to_limits(config))
        context.add_output_metadata({
            "requests": manifest.n_items, "files": len(manifest.files), "bytes": manifest.n_bytes,
            "input_tokens": manifest.input_tokens, "requested_model": manifest.model,
            **_cost_metadata("estimated", manifest.estimate),
            "request_files": [str(f.path) for f in manifest.files],
        })
        return manifest

    @dg.asset(name=spec.batches_asset, ins={"manifest": dg.AssetIn(spec.requests_asset)}, kinds={"openai"},
              description=f"{spec.name}: uploads the request files and creates one batch per file (adopting a batch "
                          "an earlier run created for the same file). The batch sensor then follows them, recording "
                          "progress as observations here (Events tab); no run stays open.",
              **common)
    def batches(context: dg.AssetExecutionContext, manifest: steps.RequestManifest,
                batch_api: BatchAPIResource) -> steps.Submission:
        submission = steps.submit(batch_api.client(), manifest)
        context.add_output_metadata({
            "batch_ids": submission.batch_ids, "batches": len(submission.batches),
            "adopted": sum(b.adopted for b in submission.batches), "requests": manifest.n_items,
            "provider": batch_api.provider,
        })
        return submission

    @dg.asset(name=spec.results_asset, ins={"submission": dg.AssetIn(spec.batches_asset)},
              kinds={"openai", "duckdb", "polars"}, pool=DUCKDB_POOL,
              description=f"{spec.name}: downloads every batch's output and error files (streamed) and records "
                          "one outcome per item (table batch_outcomes) and the actual tokens and cost per batch "
                          "(table batch_costs).",
              metadata={"dagster/column_schema": table_schema("batch_outcomes")}, **common)
    def results(context: dg.AssetExecutionContext, submission: steps.Submission, batch_api: BatchAPIResource,
                warehouse_db: WarehouseResource) -> steps.CollectedResults:
        month = partition_month(context)
        collected = steps.collect(batch_api.client(), submission, warehouse_db.work_dir("results", spec.name, month))
        with warehouse_db.connect() as con:
            warehouse.replace_partition(con, "batch_outcomes", month, steps.outcome_rows(collected),
                                        pipeline=spec.name)
            warehouse.replace_partition(con, "batch_costs", month, steps.cost_rows(collected), pipeline=spec.name)
        costs = collected.costs
        context.add_output_metadata({
            **{f"outcome_{name}": n for name, n in sorted(collected.outcome_counts.items())},
            "prompt_tokens": int(costs["prompt_tokens"].sum() or 0),
            "completion_tokens": int(costs["completion_tokens"].sum() or 0),
            **_cost_metadata("actual", collected.actual),
            **_cost_metadata("openai_equivalent", collected.openai_equivalent),
        })
        return collected

    check_specs = [dg.AssetCheckSpec(check.name, asset=spec.output_table, description=check.description,
                                     partitions_def=partitions_def)  # one result per month, not one overall
                   for check in spec.checks]

    @dg.asset(name=spec.output_table, ins={"collected": dg.AssetIn(spec.results_asset)}, deps=[spec.source],
              kinds={"duckdb", "polars"}, pool=DUCKDB_POOL, check_specs=check_specs,
              description=f"{spec.description} Output table `{spec.output_table}` in DuckDB, one month replaced "
                          "at a time.",
              metadata={"dagster/column_schema": table_schema(spec.output_table, spec.output_columns)}, **common)
    def output(context: dg.AssetExecutionContext, collected: steps.CollectedResults,
               warehouse_db: WarehouseResource) -> dg.MaterializeResult:
        month = partition_month(context)
        with warehouse_db.connect() as con:
            items = warehouse.read_table(con, spec.source, month)
            rows = steps.output_rows(spec, spec.defaults, items, collected)
            written = warehouse.replace_partition(con, spec.output_table, month, rows)
            check_results = []
            for check in spec.checks:
                outcome = check.run(con, month)
                check_results.append(dg.AssetCheckResult(
                    check_name=check.name, passed=outcome.passed, description=outcome.description,
                    severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
                    metadata={**outcome.metadata,
                              **{k: dg.MetadataValue.md(v) for k, v in outcome.markdown.items()}}))
        return dg.MaterializeResult(metadata={"dagster/row_count": written, "items": collected.outcome_counts},
                                    check_results=check_results)

    jobs = {
        "submit": dg.define_asset_job(
            f"{spec.name}_submit", selection=[spec.source, spec.requests_asset, spec.batches_asset], tags=run_tags,
            description=f"{spec.name}: load the month's {spec.source}, write request files, submit batches. "
                        "The batch sensor collects the results when the batches end."),
        "collect": dg.define_asset_job(
            f"{spec.name}_collect", selection=[spec.results_asset, spec.output_table], tags=run_tags,
            description=f"{spec.name}: download and parse finished batches into DuckDB (the sensor launches it)."),
    }
    return [requests, batches, results, output], jobs

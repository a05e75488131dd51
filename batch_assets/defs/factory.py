"""Turns one PipelineSpec into its assets, checks and jobs: requests → batches → (sensor) → results → output table.

Assets hand each other nothing through an IO manager: what a month submitted lives in the batch ledger, so a
run of any later release (or a run with other config) collects and builds outputs from what was submitted.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import dagster as dg
import pydantic

from batch_assets import warehouse
from batch_assets.batching.money import describe_cost
from batch_assets.batching.pricing import Cost
from batch_assets.batching.protocol import EMBEDDINGS_URL, MAX_FILE_BYTES, MAX_REQUESTS_PER_FILE
from batch_assets.batching.queue_limits import limit_for
from batch_assets.batching.request_files import BatchLimits
from batch_assets.defs.backfill_handoff import queue_collect_in_backfill
from batch_assets.defs.partitions import partition_month
from batch_assets.defs.resources import BatchAPIResource, LedgerResource, WarehouseResource
from batch_assets.defs.source_assets import DUCKDB_POOL
from batch_assets.defs.table_schema import table_schema
from batch_assets.ledger.records import FileState
from batch_assets.pipelines.accounting import ItemState, MonthReport
from batch_assets.pipelines.budget import BudgetExceeded
from batch_assets.pipelines.collect import collect_month, month_answers, month_report
from batch_assets.pipelines.outputs import write_output_rows
from batch_assets.pipelines.plan import month_key, plan_month
from batch_assets.pipelines.spec import BudgetPolicy, PipelineSpec, RetryPolicy, SubmissionSettings
from batch_assets.pipelines.submit import submit_month
from batch_assets.settings import PlatformSettings

AssetJob = Any  # what define_asset_job returns (its class is not exported by dagster)
ACCOUNTED_CHECK = "items_accounted_for"
FAILURE_CHECK = "final_failure_share"
PROGRESS_CHECK = "batches_progressing"


def settings_config_class(spec: PipelineSpec, platform: PlatformSettings) -> type[dg.Config]:
    """Run config the launchpad shows for this pipeline, defaults filled in from the declaration."""
    d = spec.defaults
    # (type, Field) pairs as pydantic.create_model takes them (the types are forms such as `int | None`).
    fields: dict[str, Any] = {
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
            expected_output_tokens=(int, pydantic.Field(
                default=d.expected_output_tokens, ge=0,
                description="output tokens per request the estimate expects until this pipeline has history "
                            "(then the p50 of past answers is used)")),
        )
    if d.labels:
        fields["labels"] = (list[str], pydantic.Field(default=list(d.labels), min_length=1,
                                                      description="the labels the model may answer"))
    # Per-file limits: OpenAI's by default; lower them for providers that need it, or set a token budget.
    fields.update(
        max_requests_per_file=(int, pydantic.Field(default=MAX_REQUESTS_PER_FILE, ge=1)),
        max_file_bytes=(int, pydantic.Field(default=MAX_FILE_BYTES, ge=1)),
        max_tokens_per_file=(int | None, pydantic.Field(
            default=None, description="input-token budget per file, e.g. your tier's enqueued-token limit")),
        max_cost_per_submission_usd=(float | None, pydantic.Field(
            default=platform.max_cost_per_submission_usd, ge=0,
            description="refuse the submission (before any upload) if it may cost more than this, in batch-price "
                        "dollars; null: no cap")),
        max_cost_per_month_usd=(float | None, pydantic.Field(
            default=platform.max_cost_per_month_usd, ge=0,
            description="refuse it if the month (every pipeline) may then cost more than this; null: no cap")),
        use_cache=(bool, pydantic.Field(
            default=True, description="answer requests identical to ones already answered (any month or "
                                      "pipeline) from the warehouse instead of paying for them again")),
        max_attempts=(int, pydantic.Field(default=platform.max_attempts, ge=1,
                                          description="an item is submitted at most this many times")),
        retry_delay_seconds=(float, pydantic.Field(default=platform.retry_delay_seconds, ge=0,
                                                   description="pause before resubmitting retryable items")),
        max_failure_share=(float, pydantic.Field(default=platform.max_failure_share, ge=0, le=1,
                                                 description="the month's check fails above this share of "
                                                             "final failures")),
    )
    name = "".join(part.capitalize() for part in spec.name.split("_")) + "Settings"
    return pydantic.create_model(name, __base__=dg.Config, **fields)


_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def run_config_from(config_class: type[dg.Config]) -> Callable[[_Fn], _Fn]:
    """Gives a compute function's `config` parameter the pipeline's own config class. Dagster builds the
    launchpad's run config from that annotation, and each pipeline's class (its defaults are the declaration's)
    exists only at load time, so the source annotates `config: dg.Config` and this puts the real class there."""
    def annotate(fn: _Fn) -> _Fn:
        fn.__annotations__["config"] = config_class
        return fn
    return annotate


_LIMIT_FIELDS = ("max_requests_per_file", "max_file_bytes", "max_tokens_per_file")
_RETRY_FIELDS = ("max_attempts", "retry_delay_seconds", "max_failure_share")
_BUDGET_FIELDS = ("max_cost_per_submission_usd", "max_cost_per_month_usd", "use_cache")


def to_submission_settings(spec: PipelineSpec, config: dg.Config,
                           enqueued_token_limits: Mapping[str, int] | None = None) -> SubmissionSettings:
    """Run config → what the plan records. Files are split under each model's enqueued-token limit, so every
    file fits the queue on its own."""
    values = config.model_dump()
    pipeline = {k: v for k, v in values.items() if k not in _LIMIT_FIELDS + _RETRY_FIELDS + _BUDGET_FIELDS}
    if "labels" in pipeline:
        pipeline["labels"] = tuple(pipeline["labels"])
    settings = dataclasses.replace(spec.defaults, **pipeline)
    queue_limit = limit_for(settings.model, enqueued_token_limits or {})
    limits = BatchLimits(max_requests_per_file=values["max_requests_per_file"],
                         max_bytes_per_file=values["max_file_bytes"],
                         max_tokens_per_file=values["max_tokens_per_file"],
                         tokens_per_file_by_model={settings.model: min(queue_limit, values["max_tokens_per_file"]
                                                                       or queue_limit)} if queue_limit else {})
    retry = RetryPolicy(**{k: values[k] for k in _RETRY_FIELDS})
    budget = BudgetPolicy(**{k: values[k] for k in _BUDGET_FIELDS})
    return SubmissionSettings(settings, limits, retry, budget)


def _cost_metadata(prefix: str, cost: Cost | None) -> dict[str, Any]:
    """Numeric values Dagster plots, and the same in words people read."""
    if cost is None:
        return {}
    return {f"{prefix}_batch_usd": cost.batch_usd, f"{prefix}_standard_usd": cost.standard_usd,
            f"{prefix}_saving_usd": cost.saving_usd, f"{prefix}_cost": describe_cost(cost)}


def _report_metadata(report: MonthReport) -> dict[str, Any]:
    return {"month_state": report.state.value, "attempt": report.attempt, "items": report.n_items,
            "items_by_state": report.by_state, "final_outcomes": report.by_outcome,
            "final_by_attempt": report.by_attempt, "summary": report.summary()}


def _check_results(report: MonthReport) -> Iterator[dg.AssetCheckResult]:
    missing = (f"; {report.n_source_items_missing} source item(s) were never planned (e.g. "
               f"{report.source_items_missing}): materialize the month's requests again to submit them"
               if report.n_source_items_missing else "")
    yield dg.AssetCheckResult(
        check_name=ACCOUNTED_CHECK, passed=report.accounted_for, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{report.n_items - report.by_state.get(ItemState.UNACCOUNTED, 0)} of {report.n_items} items "
                     f"accounted for{missing}"),
        metadata={**_report_metadata(report), "unaccounted": report.n_unaccounted})
    yield dg.AssetCheckResult(
        check_name=FAILURE_CHECK, passed=report.failure_share <= report.max_failure_share,
        severity=dg.AssetCheckSeverity.WARN,
        description=(f"{report.failure_share:.1%} of items failed for good (threshold "
                     f"{report.max_failure_share:.1%})"),
        metadata={"failure_share": round(report.failure_share, 4), "threshold": report.max_failure_share,
                  "final_failures": report.by_state.get(ItemState.FAILED, 0), "final_outcomes": report.by_outcome,
                  "final_by_attempt": report.by_attempt})


def build_pipeline(spec: PipelineSpec, partitions_def: dg.PartitionsDefinition, platform: PlatformSettings
                   ) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The pipeline's four assets and its checks (its jobs: `build_pipeline_jobs`)."""
    config_class = settings_config_class(spec, platform)

    @dg.asset(name=spec.requests_asset, deps=[spec.source], kinds={"openai", "polars"}, pool=DUCKDB_POOL,
              description=f"{spec.description} Plans the month's next submission: the items without a "
                          "successful answer (all of them the first time), written to content-addressed request "
                          "files split under the Batch API limits, with exact input tokens (OpenAI's tokenizer for "
                          "the requested model) and the estimated cost. Nothing is planned while an attempt is in "
                          "flight.", partitions_def=partitions_def, group_name=spec.name)
    @run_config_from(config_class)
    def requests(context: dg.AssetExecutionContext, config: dg.Config,
                 warehouse_db: WarehouseResource, ledger: LedgerResource) -> dg.MaterializeResult:
        month = partition_month(context)
        settings = to_submission_settings(spec, config, platform.enqueued_token_limits)
        with warehouse_db.connect() as con, ledger.open() as led:
            items = warehouse.read_table(con, spec.source, month)
            try:
                planned = plan_month(spec, settings, items, month, ledger=led, con=con,
                                     requests_dir=warehouse_db.requests_dir(spec.name, month),
                                     results_dir=warehouse_db.results_dir, run_id=context.run.run_id)
            except BudgetExceeded as exc:
                raise dg.Failure(str(exc), allow_retries=False) from None
        context.log.info(planned.message)
        metadata: dict[str, Any] = {"summary": planned.message, "items": planned.n_items,
                                    "requested_model": settings.pipeline.model}
        if planned.plan is not None:
            estimate = planned.estimate
            metadata.update({
                "attempt": planned.plan.attempt, "plan_id": planned.plan.plan_id, "requests": planned.n_requests,
                "already_answered": planned.n_reused, "files": len(planned.files), "bytes": planned.n_bytes,
                "input_tokens": planned.input_tokens,
                "estimate": estimate.describe() if estimate else "unknown (no price for this model)",
                **_cost_metadata("estimated", estimate.expected if estimate else None),
                **_cost_metadata("estimated_upper", estimate.upper if estimate else None),
                "expected_output_tokens_per_request": estimate.output_guess.per_request if estimate else None,
                "cache_hits": planned.cache_hits, **_cost_metadata("cache_saved", planned.cache_saved),
                "request_files": [str(f.path) for f in planned.files]})
        elif planned.blocking is not None:
            metadata.update({"in_flight_attempt": planned.blocking.attempt,
                             "in_flight_requests": planned.blocking.n_requests})
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(name=spec.batches_asset, deps=[spec.requests_asset], kinds={"openai"},
              description=f"{spec.name}: uploads the month's planned request files and creates one batch per file; "
                          "a file whose batch exists (an earlier, concurrent or crashed run made it) is adopted, "
                          "never paid twice. The batch sensor then follows them and records progress and the "
                          "month's state as observations here (Events tab); no run stays open.",
              partitions_def=partitions_def, group_name=spec.name)
    def batches(context: dg.AssetExecutionContext, batch_api: BatchAPIResource,
                ledger: LedgerResource) -> dg.MaterializeResult:
        month = partition_month(context)
        with ledger.open() as led:
            submitted = submit_month(batch_api.client(), led, spec.name, month,
                                     enqueued_token_limits=platform.enqueued_token_limits)
            record = led.month(spec.name, month_key(month))
        context.log.info(submitted.message)
        return dg.MaterializeResult(metadata={
            "summary": submitted.message, "batch_ids": list(submitted.batch_ids), "batches": len(submitted.batch_ids),
            "created": submitted.created, "adopted": submitted.adopted, "queued_files": submitted.queued,
            "provider": batch_api.provider,
            "attempt": record.attempt if record else 0,
            "month_state": record.state.value if record else "not submitted"})

    accounting_checks = [
        dg.AssetCheckSpec(ACCOUNTED_CHECK, asset=spec.results_asset, partitions_def=partitions_def,
                          description="Every item of the month is accounted for: succeeded, in flight, to be "
                                      "retried or failed for good (ERROR when any is not)."),
        dg.AssetCheckSpec(FAILURE_CHECK, asset=spec.results_asset, partitions_def=partitions_def,
                          description="The share of items that failed for good stays under the threshold "
                                      "(run config max_failure_share)."),
    ]

    @dg.asset(name=spec.results_asset, deps=[spec.batches_asset], kinds={"openai", "duckdb", "polars"},
              pool=DUCKDB_POOL, output_required=False,
              description=f"{spec.name}: downloads every ended batch's output and error files (streamed), records "
                          "one outcome per item and attempt (table batch_outcomes) and the actual tokens and cost "
                          "per batch (table batch_costs), then accounts for every item and plans the retry of "
                          "retryable ones. Skipped while the month's batches still run: the batch sensor "
                          "launches it when they end.",
              metadata={"dagster/column_schema": table_schema("batch_outcomes")},
              partitions_def=partitions_def, group_name=spec.name)
    def results(context: dg.AssetExecutionContext, batch_api: BatchAPIResource, warehouse_db: WarehouseResource,
                ledger: LedgerResource) -> Iterator[dg.MaterializeResult]:
        month = partition_month(context)
        with warehouse_db.connect() as con, ledger.open() as led:
            source = warehouse.read_table(con, spec.source, month, columns=[spec.item_id_column])  # ids, no texts
            collected = collect_month(
                batch_api.client(), led, con, spec.name, month,
                work_dir=warehouse_db.downloads_dir(spec.name, month), results_dir=warehouse_db.results_dir,
                requests_dir=warehouse_db.requests_dir(spec.name, month),
                source_item_ids=source[spec.item_id_column] if spec.item_id_column in source.columns else None)
        if collected.report is None:
            context.log.info(f"skipped: {collected.message}")
            collect_job = f"{spec.name}_collect"
            if context.run.job_name != collect_job and collected.waiting:
                handoff = queue_collect_in_backfill(context, collect_job, spec.name, month_key(month))
                if handoff:
                    context.log.info(handoff)
            return
        context.log.info(collected.message)
        actual, equivalent = collected.total("actual"), collected.total("openai_equivalent")
        counts: dict[str, int] = {}
        for batch in collected.collected:
            for outcome, n in batch.outcome_counts.items():
                counts[outcome] = counts.get(outcome, 0) + n
        yield dg.MaterializeResult(metadata={
            **_report_metadata(collected.report), "collected_batches": [b.batch_id for b in collected.collected],
            "still_running": list(collected.pending), **{f"outcome_{k}": v for k, v in sorted(counts.items())},
            "prompt_tokens": sum(b.prompt_tokens for b in collected.collected),
            "completion_tokens": sum(b.completion_tokens for b in collected.collected),
            **_cost_metadata("actual", actual), **_cost_metadata("openai_equivalent", equivalent),
            "retry_attempt": collected.retry_plan.attempt if collected.retry_plan else 0})

    # A check of its own (not a check spec of the results asset): it is skipped with the asset while batches
    # run, and a user can run it on any month from the UI.
    @dg.multi_asset_check(specs=accounting_checks, name=f"{spec.name}_accounting", pool=DUCKDB_POOL,
                          can_subset=True)
    def accounting(context: dg.AssetCheckExecutionContext, warehouse_db: WarehouseResource,
                   ledger: LedgerResource) -> Iterator[dg.AssetCheckResult]:
        month = partition_month(context)
        with warehouse_db.connect() as con, ledger.open() as led:
            source = warehouse.read_table(con, spec.source, month, columns=[spec.item_id_column])
            current = month_report(led, con, spec.name, month, source_item_ids=source[spec.item_id_column])
        if current.report is None:
            raise dg.Failure(f"{spec.results_asset} {month:%Y-%m}: {current.message}")
        for result in _check_results(current.report):
            if dg.AssetCheckKey(dg.AssetKey(spec.results_asset), result.check_name or "") in \
                    context.selected_asset_check_keys:
                yield result

    check_specs = [dg.AssetCheckSpec(check.name, asset=spec.output_table, description=check.description,
                                     partitions_def=partitions_def)  # one result per month, not one overall
                   for check in spec.checks]

    @dg.asset(name=spec.output_table, deps=[spec.results_asset, spec.source], kinds={"duckdb", "polars"},
              pool=DUCKDB_POOL, check_specs=check_specs,
              description=f"{spec.description} Output table `{spec.output_table}` in DuckDB, one month replaced "
                          "at a time, built from the month's successful answers with the settings its requests "
                          "were built with.",
              metadata={"dagster/column_schema": table_schema(spec.output_table, spec.output_columns,
                                                              spec.output_schema)},
              partitions_def=partitions_def, group_name=spec.name)
    def output(context: dg.AssetExecutionContext, warehouse_db: WarehouseResource,
               ledger: LedgerResource) -> dg.MaterializeResult:
        month = partition_month(context)
        with warehouse_db.connect() as con, ledger.open() as led:
            current = month_answers(led, con, spec.name, month)
            if current.report is None or current.settings is None:
                raise dg.Failure(f"{spec.output_table} {month:%Y-%m}: {current.message}; materialize "
                                 f"{spec.requests_asset} and {spec.batches_asset} for the month first")
            written = write_output_rows(con, spec, current.settings, current.classified, month,
                                        warehouse_db.results_dir)
            check_results = []
            for check in spec.checks:
                outcome = check.run(con, month)
                check_results.append(dg.AssetCheckResult(
                    check_name=check.name, passed=outcome.passed, description=outcome.description,
                    severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
                    metadata={**outcome.metadata,
                              **{k: dg.MetadataValue.md(v) for k, v in outcome.markdown.items()}}))
        return dg.MaterializeResult(metadata={"dagster/row_count": written, **_report_metadata(current.report)},
                                    check_results=check_results)

    stall_seconds = platform.stall_after_hours * 3600

    @dg.asset_check(asset=spec.batches_asset, name=PROGRESS_CHECK, partitions_def=partitions_def,
                    description=f"The month's running batches made progress within the last "
                                f"{platform.stall_after_hours:g} h (BATCH_ASSETS_STALL_AFTER_HOURS); the batch "
                                "sensor also reports stalls here.")
    def progressing(context: dg.AssetCheckExecutionContext, ledger: LedgerResource) -> dg.AssetCheckResult:
        month = month_key(partition_month(context))
        with ledger.open() as led:
            running = led.files(pipeline=spec.name, month=month, states=(FileState.SUBMITTED,))
        now = time.time()
        stalled = [f for f in running if now - (f.progress_at or f.submitted_at or now) > stall_seconds]
        return dg.AssetCheckResult(
            passed=not stalled, severity=dg.AssetCheckSeverity.WARN,
            description=(f"{len(stalled)} of {len(running)} running batch(es) made no progress for "
                         f"{platform.stall_after_hours:g} h: batch-assets batches cancel --pipeline {spec.name} "
                         f"--month {month[:7]}" if stalled else f"{len(running)} running batch(es), all progressing"),
            metadata={"running": len(running), "stalled_batch_ids": [f.batch_id for f in stalled]})

    return [requests, batches, results, output], [progressing, accounting]


def build_pipeline_jobs(spec: PipelineSpec, run_tags: Mapping[str, str] | None = None) -> dict[str, AssetJob]:
    """The pipeline's `submit`, `collect` and `resubmit` jobs (their runs carry `run_tags`). Built with the
    platform's other jobs: the batch sensor launches them by name."""
    return {
        "submit": dg.define_asset_job(
            f"{spec.name}_submit", selection=[spec.source, spec.requests_asset, spec.batches_asset], tags=run_tags,
            description=f"{spec.name}: load the month's {spec.source}, plan the requests, submit batches. "
                        "The batch sensor collects the results when the batches end and retries what failed."),
        "collect": dg.define_asset_job(
            f"{spec.name}_collect", selection=[spec.results_asset, spec.output_table], tags=run_tags,
            description=f"{spec.name}: download and parse ended batches into DuckDB and plan retries "
                        "(the batch sensor launches it)."),
        "resubmit": dg.define_asset_job(
            f"{spec.name}_resubmit", selection=[spec.batches_asset], tags=run_tags,
            description=f"{spec.name}: submit the month's planned attempt (the batch sensor launches it for "
                        "retries; it also finishes a submission a crashed run left half done)."),
    }

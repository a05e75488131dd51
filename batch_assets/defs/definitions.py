"""Assembles the code location: sources, one set of assets per pipeline, the batch sensor, the schedule."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from batch_assets.defs.control_jobs import build_cancel_job
from batch_assets.defs.factory import build_pipeline
from batch_assets.defs.partitions import monthly_partitions
from batch_assets.defs.resources import (
    BatchAPIResource,
    LedgerResource,
    OutputTable,
    SourcesResource,
    WarehouseResource,
)
from batch_assets.defs.sensor import build_batch_sensor
from batch_assets.defs.source_assets import build_source_assets
from batch_assets.pipelines.catalog import PIPELINES
from batch_assets.pipelines.spec import PipelineSpec
from batch_assets.settings import PlatformSettings

# Every job's runs carry their provider, so the run queue can limit runs per provider (deploy/dagster.yaml).
PROVIDER_TAG = "batch_assets/provider"


def batch_api_resource(settings: PlatformSettings) -> BatchAPIResource:
    if settings.provider == "openai":
        import os

        if not os.environ.get("OPENAI_API_KEY"):
            raise dg.DagsterInvalidDefinitionError(
                "BATCH_ASSETS_PROVIDER=openai but OPENAI_API_KEY is not set: set OPENAI_API_KEY (and OPENAI_BASE_URL "
                "for an OpenAI-compatible endpoint), or use the local engine with BATCH_ASSETS_PROVIDER=local"
            )
        return BatchAPIResource(provider="openai", api_key=dg.EnvVar("OPENAI_API_KEY"),
                                base_url=os.environ.get("OPENAI_BASE_URL"))
    return BatchAPIResource(provider="local", local_state_dir=str(settings.local_state_dir))


def build_definitions(settings: PlatformSettings | None = None,
                      pipelines: Sequence[PipelineSpec] = PIPELINES) -> dg.Definitions:
    settings = settings or PlatformSettings.from_env()
    partitions_def = monthly_partitions(settings)
    run_tags = {PROVIDER_TAG: settings.provider}
    assets: list[dg.AssetsDefinition] = build_source_assets(partitions_def)
    asset_checks: list[dg.AssetChecksDefinition] = []
    jobs: list = [build_cancel_job([spec.name for spec in pipelines], run_tags)]
    pipeline_jobs, submit_jobs = {}, {}
    for spec in pipelines:
        pipeline_assets, pipeline_checks, pipeline_jobs[spec.name] = build_pipeline(spec, partitions_def, settings,
                                                                                    run_tags)
        assets += pipeline_assets
        asset_checks += pipeline_checks
        jobs += pipeline_jobs[spec.name].values()
        submit_jobs[spec.name] = pipeline_jobs[spec.name]["submit"]
    jobs.append(dg.define_asset_job(
        "submit_month", tags=run_tags,  # job tags are also run tags, for UI and API launches alike
        selection=dg.AssetSelection.assets(*{spec.source for spec in pipelines},
                                           *[spec.requests_asset for spec in pipelines],
                                           *[spec.batches_asset for spec in pipelines]),
        description="Every pipeline for one month: load sources, write request files, submit batches. "
                    "The batch sensor carries each pipeline on to its output table.",
    ))
    schedules = []
    if "reports" in submit_jobs:
        schedules.append(dg.build_schedule_from_partitioned_job(
            submit_jobs["reports"], name="monthly_reports_schedule", hour_of_day=2,
            description="On the 1st of each month, submits the previous month's company reports.",
            # Free on the local engine; with a paid provider, switch it on deliberately.
            default_status=dg.DefaultScheduleStatus.RUNNING if settings.provider == "local"
            else dg.DefaultScheduleStatus.STOPPED,
        ))
    output_tables = [OutputTable(name=declared.name, columns=dict(declared.columns), key=list(declared.key))
                     for declared in (spec.output_table_declaration() for spec in pipelines) if declared]
    return dg.Definitions(
        assets=assets,
        asset_checks=asset_checks,
        jobs=jobs,
        schedules=schedules,
        sensors=[build_batch_sensor(pipelines, pipeline_jobs, settings.sensor_interval_seconds,
                                    settings.stall_after_hours)],
        resources={
            "batch_api": batch_api_resource(settings),
            "warehouse_db": WarehouseResource(duckdb_path=str(settings.duckdb_path), data_dir=str(settings.data_dir),
                                              output_tables=output_tables),
            "ledger": LedgerResource(url=settings.ledger_url),
            "sources_config": SourcesResource(documents_path=settings.documents_path,
                                              docs_per_month=settings.docs_per_month,
                                              company_metrics_path=settings.company_metrics_path),
        },
    )


defs = build_definitions()

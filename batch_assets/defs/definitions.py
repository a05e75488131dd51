"""Assembles definitions from pipeline declarations: one pipeline's assets and checks, and the platform every
pipeline shares (sources, each pipeline's jobs, `submit_month`, `cancel_month`, the batch sensor, the schedule,
the resources).

The code location (`batch_assets.definitions`) builds the same parts from the defs folder's components;
`build_definitions` builds them from a list of `PipelineSpec`s, for a test or a script.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import dagster as dg

from batch_assets.defs.control_jobs import build_cancel_job
from batch_assets.defs.factory import AssetJob, build_pipeline, build_pipeline_jobs
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
# Dagster 1.13 marks AssetCheckSpec(partitions_def=...) as a preview. The per-month checks (one result per
# month, not one per asset) rely on it, knowingly: this is the only place they are built, and only this warning
# is silenced there.
_PER_MONTH_CHECKS_PREVIEW = r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"


def batch_api_resource(settings: PlatformSettings) -> BatchAPIResource:
    if settings.provider == "openai":
        if not os.environ.get("OPENAI_API_KEY"):
            raise dg.DagsterInvalidDefinitionError(
                "BATCH_ASSETS_PROVIDER=openai but OPENAI_API_KEY is not set: set OPENAI_API_KEY (and OPENAI_BASE_URL "
                "for an OpenAI-compatible endpoint), or use the local engine with BATCH_ASSETS_PROVIDER=local"
            )
        return BatchAPIResource(provider="openai", api_key=dg.EnvVar("OPENAI_API_KEY"),
                                base_url=os.environ.get("OPENAI_BASE_URL"))
    return BatchAPIResource(provider="local", local_state_dir=str(settings.local_state_dir))


def pipeline_definitions(spec: PipelineSpec, settings: PlatformSettings) -> dg.Definitions:
    """One pipeline's four assets and its checks."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PER_MONTH_CHECKS_PREVIEW, category=dg.PreviewWarning)
        assets, checks = build_pipeline(spec, monthly_partitions(settings), settings)
    return dg.Definitions(assets=assets, asset_checks=checks)


def check_pipelines(pipelines: Sequence[PipelineSpec]) -> None:
    """Pipelines of one code location need their own names and output tables."""
    for attribute in ("name", "output_table"):
        values = [getattr(spec, attribute) for spec in pipelines]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise dg.DagsterInvalidDefinitionError(
                f"two pipelines have the {attribute.replace('_', ' ')} {', '.join(repeated)}: give each its own")


def platform_definitions(settings: PlatformSettings, pipelines: Sequence[PipelineSpec]) -> dg.Definitions:
    """What the pipelines share: sources, their jobs, the batch sensor, the schedule and the resources."""
    check_pipelines(pipelines)
    run_tags = {PROVIDER_TAG: settings.provider}
    jobs: list[AssetJob] = [build_cancel_job([spec.name for spec in pipelines], run_tags)]
    pipeline_jobs = {spec.name: build_pipeline_jobs(spec, run_tags) for spec in pipelines}
    for per_pipeline in pipeline_jobs.values():
        jobs += per_pipeline.values()
    jobs.append(dg.define_asset_job(
        "submit_month", tags=run_tags,  # job tags are also run tags, for UI and API launches alike
        selection=dg.AssetSelection.assets(*{spec.source for spec in pipelines},
                                           *[spec.requests_asset for spec in pipelines],
                                           *[spec.batches_asset for spec in pipelines]),
        description="Every pipeline for one month: load sources, write request files, submit batches. "
                    "The batch sensor carries each pipeline on to its output table.",
    ))
    schedules = []
    if "reports" in pipeline_jobs:
        schedules.append(dg.build_schedule_from_partitioned_job(
            pipeline_jobs["reports"]["submit"], name="monthly_reports_schedule", hour_of_day=2,
            description="On the 1st of each month, submits the previous month's company reports.",
            # Free on the local engine; with a paid provider, switch it on deliberately.
            default_status=dg.DefaultScheduleStatus.RUNNING if settings.provider == "local"
            else dg.DefaultScheduleStatus.STOPPED,
        ))
    output_tables = [OutputTable(name=declared.name, columns=dict(declared.columns), key=list(declared.key))
                     for declared in (spec.output_table_declaration() for spec in pipelines) if declared]
    return dg.Definitions(
        # Steps are short and mostly take turns on the warehouse's one writer (pool "duckdb"): one process per
        # step cost 3-5 s each (Python + Dagster start-up), so a "Materialize all" month took minutes. In one
        # process the same run takes seconds.
        executor=dg.in_process_executor,
        assets=build_source_assets(monthly_partitions(settings)),
        jobs=jobs,
        schedules=schedules,
        sensors=[build_batch_sensor(pipelines, pipeline_jobs, settings.sensor_interval_seconds,
                                    settings.stall_after_hours, settings.enqueued_token_limits)],
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


def build_definitions(settings: PlatformSettings | None = None,
                      pipelines: Sequence[PipelineSpec] = PIPELINES) -> dg.Definitions:
    """The platform with these pipelines (default: the three that ship in Python), without the defs folder."""
    settings = settings or PlatformSettings.from_env()
    return dg.Definitions.merge(platform_definitions(settings, pipelines),
                                *(pipeline_definitions(spec, settings) for spec in pipelines))

"""The batch sensor: follows every pipeline's pending batches and requests the collect run when a month ends.

It reads only the Dagster instance (materializations, its cursor) and the Batch API, never DuckDB,
so it never waits on a run holding the warehouse's write lock.
"""


from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from batch_assets.defs.resources import BatchAPIResource
from batch_assets.pipelines.spec import PipelineSpec
from batch_assets.pipelines.tracking import TrackedMonth, TrackerState, poll, progress

DISCOVERY_PAGE = 200


def _collected_since(instance: dg.DagsterInstance, spec: PipelineSpec, month: str, storage_id: int) -> bool:
    """True when the month's results were materialized after this submission (by the sensor or by hand)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(spec.results_asset), asset_partitions=[month], after_storage_id=storage_id),
        limit=1,
    )
    return bool(records.records)


def _discover(instance: dg.DagsterInstance, spec: PipelineSpec, state: TrackerState) -> None:
    """Tracks every batches materialization not seen yet."""
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(spec.batches_asset), after_storage_id=state.seen_up_to.get(spec.name)),
            limit=DISCOVERY_PAGE, ascending=True,
        )
        for record in result.records:
            materialization = record.asset_materialization
            state.seen_up_to[spec.name] = record.storage_id
            if materialization is None or materialization.partition is None:
                continue
            batch_ids = materialization.metadata.get("batch_ids")
            ids = list(batch_ids.value) if batch_ids is not None else []  # type: ignore[arg-type]
            requests = materialization.metadata.get("requests")
            if _collected_since(instance, spec, materialization.partition, record.storage_id):
                continue
            state.track(TrackedMonth(spec.name, materialization.partition, record.storage_id, ids,
                                     requests=int(requests.value) if requests is not None else 0))
        if not result.has_more:
            return


def build_batch_sensor(pipelines: Sequence[PipelineSpec], collect_jobs: Mapping[str, Any],
                       interval_seconds: int) -> dg.SensorDefinition:
    specs = {spec.name: spec for spec in pipelines}

    @dg.sensor(
        name="batch_sensor", minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING, jobs=list(collect_jobs.values()),
        description="Polls every pipeline's pending batches (listing pages, not one call per batch), records "
                    "progress as observations on the <pipeline>_batches assets, and launches <pipeline>_collect "
                    "for a month once all its batches have ended.",
    )
    def batch_sensor(context: dg.SensorEvaluationContext, batch_api: BatchAPIResource) -> dg.SensorResult:
        state = TrackerState.from_cursor(context.cursor)
        for spec in pipelines:
            _discover(context.instance, spec, state)
        if not state.tracked:
            return dg.SensorResult(skip_reason="no pending batches", cursor=state.to_cursor())
        batches = poll(batch_api.client(), state.all_batch_ids())
        run_requests, observations = [], []
        for month_progress in progress(state, batches):
            entry = month_progress.entry
            spec = specs[entry.pipeline]
            if month_progress.counts != entry.last_progress or month_progress.finished:
                observations.append(dg.AssetObservation(
                    asset_key=spec.batches_asset, partition=entry.month,
                    metadata={"completed": month_progress.completed, "failed": month_progress.failed,
                              "total": month_progress.total, "statuses": month_progress.statuses,
                              "finished": month_progress.finished},
                ))
                entry.last_progress = month_progress.counts
            if month_progress.finished:
                run_requests.append(dg.RunRequest(
                    run_key=f"collect:{entry.pipeline}:{entry.month}:{entry.submission_id}",
                    job_name=collect_jobs[entry.pipeline].name, partition_key=entry.month,
                    tags={"batch_assets/pipeline": entry.pipeline},
                ))
                del state.tracked[f"{entry.pipeline}|{entry.month}"]
        pending = ", ".join(f"{entry.pipeline} {entry.month[:7]}" for entry in state.tracked.values())
        summary = f"waiting for {pending}" if pending else "all submitted batches collected"
        context.log.info(f"{summary}; {len(run_requests)} collect run(s) requested")
        return dg.SensorResult(run_requests=run_requests, asset_events=observations, cursor=state.to_cursor(),
                               skip_reason=None if run_requests else summary)

    return batch_sensor

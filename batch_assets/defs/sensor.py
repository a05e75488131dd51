"""The batch sensor: follows every pipeline's batches through the ledger, shows each month's state, launches the
collect run when a month's batches end and the resubmit run when a retry is due.

It reads the ledger and the Batch API, never DuckDB, so it never waits on a run holding the warehouse's write
lock. The decisions are `pipelines.monitor.advance`; this module only turns them into Dagster events and runs.
"""

import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import orjson

from batch_assets.defs.backfill_handoff import COLLECT_FOR_TAG, collect_for, release_held_collect, release_settled
from batch_assets.defs.factory import PROGRESS_CHECK
from batch_assets.defs.resources import BatchAPIResource, LedgerResource
from batch_assets.ledger.records import MonthState
from batch_assets.pipelines.monitor import advance
from batch_assets.pipelines.spec import PipelineSpec

# Months nothing of which runs or waits any more: no collect will come due for them.
_SETTLED = frozenset({MonthState.DONE, MonthState.DONE_WITH_FAILURES, MonthState.CANCELLED})
# Months whose ledger row changed this long before the last tick are looked at again (clock skew, slow ticks).
_CHANGE_MARGIN_SECONDS = 60.0


def build_batch_sensor(pipelines: Sequence[PipelineSpec], jobs: Mapping[str, Mapping[str, Any]],
                       interval_seconds: int, stall_after_hours: float,
                       enqueued_token_limits: Mapping[str, int] | None = None) -> dg.SensorDefinition:
    specs = {spec.name: spec for spec in pipelines}
    all_jobs = [job for per_pipeline in jobs.values() for name, job in per_pipeline.items()
                if name in ("collect", "resubmit")]

    @dg.sensor(
        name="batch_sensor", minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING, jobs=all_jobs,
        description="Polls every pipeline's running batches (listing pages, not one call per batch), records "
                    "progress and each month's state (waiting / retrying / done / done with failures) as "
                    "observations on the <pipeline>_batches assets, launches <pipeline>_collect for a month once "
                    "its batches have ended and <pipeline>_resubmit when a retry is due, and reports batches "
                    "that stopped progressing.",
    )
    def batch_sensor(context: dg.SensorEvaluationContext, batch_api: BatchAPIResource,
                     ledger: LedgerResource) -> dg.SensorResult:
        cursor = orjson.loads(context.cursor) if context.cursor else {}
        reported: dict[str, Any] = cursor.get("reported", {})
        stalled_before: set[str] = set(cursor.get("stalled", []))
        started = time.time()
        with ledger.open() as led:
            decisions = advance(batch_api.client(), led, now=started, stall_after_seconds=stall_after_hours * 3600,
                                changed_since=cursor.get("last_tick", 0.0) - _CHANGE_MARGIN_SECONDS,
                                enqueued_token_limits=enqueued_token_limits)

            def settled(pipeline: str, month: str) -> bool:
                record = led.month(pipeline, month)
                return record is None or record.state in _SETTLED
            released = release_settled(context.instance, settled)
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
        waiting = []
        for progress in decisions.progress:
            spec = specs.get(progress.pipeline)
            if spec is None:
                continue
            key = f"{progress.pipeline}|{progress.month}"
            if progress.state in (MonthState.WAITING, MonthState.RETRYING):
                waiting.append(f"{progress.pipeline} {progress.month[:7]}")
            if reported.get(key) != progress.signature:
                events.append(dg.AssetObservation(
                    asset_key=spec.batches_asset, partition=progress.month,
                    metadata={"month_state": progress.state.value, "attempt": progress.attempt,
                              "completed": progress.completed, "failed": progress.failed, "total": progress.total,
                              "statuses": progress.batch_statuses, "queued_files": progress.queued_files,
                              "summary": progress.describe()}))
                reported[key] = progress.signature
        stalled_now = set()
        for stall in decisions.stalls:
            spec = specs.get(stall.file.pipeline)
            if spec is None or stall.file.batch_id is None:
                continue
            stalled_now.add(stall.file.batch_id)
            context.log.warning(stall.describe())
            if stall.file.batch_id not in stalled_before:
                events.append(dg.AssetCheckEvaluation(
                    asset_key=dg.AssetKey(spec.batches_asset), check_name=PROGRESS_CHECK, passed=False,
                    partition=stall.file.month, severity=dg.AssetCheckSeverity.WARN,
                    description=stall.describe(), metadata={"batch_id": stall.file.batch_id}))
        run_requests = []
        for due in decisions.collect:
            if due.pipeline not in specs:
                continue
            # A backfill may hold this month's collect run in the queue (defs/backfill_handoff.py): release it
            # rather than launch a second one; a collect run already queued or running needs nothing more.
            was_held, on_its_way = release_held_collect(context.instance, due.pipeline, due.month)
            if was_held:
                released.append(f"{due.pipeline} {due.month[:7]}")
            if on_its_way:
                continue
            run_requests.append(dg.RunRequest(
                run_key=due.run_key, job_name=f"{due.pipeline}_collect", partition_key=due.month,
                tags={"batch_assets/pipeline": due.pipeline, COLLECT_FOR_TAG: collect_for(due.pipeline, due.month)}))
        run_requests += [
            dg.RunRequest(run_key=due.run_key, job_name=f"{due.pipeline}_resubmit", partition_key=due.month,
                          tags={"batch_assets/pipeline": due.pipeline, "batch_assets/reason": due.reason})
            for due in decisions.submit if due.pipeline in specs]
        summary = (f"waiting for {', '.join(waiting)}" if waiting else "no batches running") + (
            f"; {len(run_requests)} run(s) requested" if run_requests else "") + (
            f"; released the collect run held by a backfill for {', '.join(released)}" if released else "")
        context.log.info(f"{summary} ({decisions.api_calls} Batch API call(s))")
        new_cursor = orjson.dumps({"reported": reported, "stalled": sorted(stalled_now),
                                   "last_tick": started}).decode()
        return dg.SensorResult(run_requests=run_requests, asset_events=events, cursor=new_cursor,
                               skip_reason=None if run_requests else summary)

    return batch_sensor

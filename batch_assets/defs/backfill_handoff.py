"""A backfill that waits for its batches: the collect run is queued inside the backfill, held until the batches end.

Dagster marks a backfill *failed* when its runs have all finished and some targeted partitions were never
materialized — which is what an optional output skipped "while batches run" looks like to it. So when a run of a
backfill submits a month and skips `<p>_results`, it also queues that month's `<p>_collect` run, tagged with the
backfill's id and held in the run queue by a tag whose concurrency limit is 0 (`dagster.yaml`). The backfill then
stays *in progress* while the batches run, with nothing holding a process open. When the month's batches end, the
batch sensor releases the held run instead of launching a new one; its materializations count for the backfill,
which ends *completed* once every month's collect has run.

Without that limit in the instance's run queue (an instance of your own), nothing is held: the sensor launches
the collect runs as usual and the backfill ends as Dagster judges it; the run says what to add.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import dagster as dg
from dagster._core.events import DagsterEvent
from dagster._core.origin import JobPythonOrigin
from dagster._core.remote_origin import RemoteJobOrigin
from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

GATE_TAG = "batch_assets/gate"
GATE_HELD = "waiting-for-batches"
GATE_RELEASED = "released"
COLLECT_FOR_TAG = "batch_assets/collect-for"
# What dagster.yaml (and deploy/dagster.yaml) carry under concurrency: runs: tag_concurrency_limits.
GATE_LIMIT = {"key": GATE_TAG, "value": GATE_HELD, "limit": 0}
_GATE_HINT = (f"add {{key: {GATE_TAG}, value: {GATE_HELD}, limit: 0}} to concurrency: runs: tag_concurrency_limits "
              "in your dagster.yaml (the project's dagster.yaml has it)")


def collect_for(pipeline: str, month: str) -> str:
    """The tag value naming a pipeline-month's collect run."""
    return f"{pipeline}:{month}"


def gate_is_configured(instance: dg.DagsterInstance) -> bool:
    """Whether the instance's run queue holds runs tagged as waiting for batches."""
    queue = instance.get_concurrency_config().run_queue_config
    if queue is None:  # no run queue (an ephemeral instance): runs start at once
        return False
    return any(limit.get("key") == GATE_TAG and limit.get("value") == GATE_HELD and limit.get("limit") == 0
               for limit in queue.tag_concurrency_limits or ())


def unfinished_collect_runs(instance: dg.DagsterInstance, pipeline: str, month: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=list(NOT_FINISHED_STATUSES),
                                                        tags={COLLECT_FOR_TAG: collect_for(pipeline, month)})))


def queue_collect_in_backfill(context: dg.AssetExecutionContext, job_name: str, pipeline: str,
                              month: str) -> str:
    """Queues the month's held collect run inside the backfill that runs this step; a line for the run's log
    (empty when this run belongs to no backfill)."""
    run = context.run
    backfill_id = run.tags.get(BACKFILL_ID_TAG)
    if not backfill_id:
        return ""
    instance = context.instance
    if not gate_is_configured(instance):
        return (f"this run is part of backfill {backfill_id}: Dagster will mark {pipeline}'s results as failed in "
                f"it although the batch sensor collects them when the batches end; to keep the backfill in "
                f"progress until then, {_GATE_HINT}")
    held = [r for r in unfinished_collect_runs(instance, pipeline, month) if r.tags.get(BACKFILL_ID_TAG) == backfill_id]
    if held:
        return f"backfill {backfill_id} already holds collect run {held[0].run_id} for {pipeline} {month[:7]}"
    if run.remote_job_origin is None or run.job_code_origin is None:
        return ""  # not launched through a code location (an in-process run): nothing can launch it later
    job = context.repository_def.get_job(job_name)
    tags: Mapping[str, str] = {
        **job.tags, BACKFILL_ID_TAG: backfill_id, PARTITION_NAME_TAG: month, GATE_TAG: GATE_HELD,
        COLLECT_FOR_TAG: collect_for(pipeline, month), "batch_assets/pipeline": pipeline}
    queued = instance.create_run_for_job(
        job, tags=tags, status=dg.DagsterRunStatus.NOT_STARTED,
        remote_job_origin=RemoteJobOrigin(repository_origin=run.remote_job_origin.repository_origin,
                                          job_name=job_name),
        job_code_origin=JobPythonOrigin(job_name, run.job_code_origin.repository_origin))
    instance.report_dagster_event(DagsterEvent.job_enqueue(queued), run_id=queued.run_id)
    return (f"queued {job_name} for {month[:7]} in backfill {backfill_id} (run {queued.run_id}), held until the "
            "batches end: the batch sensor releases it, and the backfill completes when it has run")


def release_settled(instance: dg.DagsterInstance, is_settled: Callable[[str, str], bool]) -> list[str]:
    """Releases held collect runs whose month has settled (`is_settled(pipeline, month)`: nothing of it runs or waits
    any more, so no collect will come due to release them): a collect launched in the instant between a backfill
    run's skip and its queueing of the held run. What was released, as "pipeline month" lines."""
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED],
                                                       tags={GATE_TAG: GATE_HELD})):
        pipeline, _, month = run.tags.get(COLLECT_FOR_TAG, "").partition(":")
        if pipeline and month and is_settled(pipeline, month):
            instance.add_run_tags(run.run_id, {GATE_TAG: GATE_RELEASED})
            released.append(f"{pipeline} {month[:7]}")
    return released


def release_held_collect(instance: dg.DagsterInstance, pipeline: str, month: str) -> tuple[bool, bool]:
    """(released, already_on_its_way): releases a held collect run of the month, or says one is queued or running
    already, so that the sensor launches no second one."""
    runs = unfinished_collect_runs(instance, pipeline, month)
    released = False
    for run in runs:
        if run.tags.get(GATE_TAG) == GATE_HELD:
            instance.add_run_tags(run.run_id, {GATE_TAG: GATE_RELEASED})
            released = True
    return released, bool(runs)

"""Jobs a user launches by hand from the launchpad: cancel a month's batches."""

from collections.abc import Mapping, Sequence

import dagster as dg
import pydantic

from batch_assets.defs.resources import BatchAPIResource, LedgerResource
from batch_assets.pipelines.control import cancel_month
from batch_assets.sources import month_start


def build_cancel_job(pipeline_names: Sequence[str], run_tags: Mapping[str, str] | None = None) -> dg.JobDefinition:
    names = tuple(pipeline_names)

    class CancelConfig(dg.Config):
        pipeline: str = pydantic.Field(description=f"one of: {', '.join(names)}")
        month: str = pydantic.Field(description="the month, e.g. 2024-03")

    @dg.op(description="Cancels the month's running batches (finished items are kept and collected by the batch "
                       "sensor), drops files not submitted yet, and marks the month so nothing of it is retried.")
    def cancel_batches(context: dg.OpExecutionContext, config: CancelConfig, batch_api: BatchAPIResource,
                       ledger: LedgerResource) -> None:
        if config.pipeline not in names:
            raise dg.Failure(f"unknown pipeline {config.pipeline!r}: set `pipeline` to one of {', '.join(names)}")
        try:
            month = month_start(config.month)
        except ValueError as exc:
            raise dg.Failure(f"month {config.month!r}: {exc}") from None
        with ledger.open() as led:
            try:
                outcome = cancel_month(batch_api.client(), led, config.pipeline, month)
            except ValueError as exc:
                raise dg.Failure(str(exc)) from None
        context.log.info(outcome.describe())
        context.add_output_metadata({"cancelled_batches": list(outcome.cancelled_batches),
                                     "dropped_files": outcome.dropped_files, "summary": outcome.describe()})

    @dg.job(name="cancel_month", tags=run_tags,
            description="Cancel a pipeline-month's batches: set pipeline and month in the launchpad "
                        "(ops: cancel_batches: config).")
    def cancel_job() -> None:
        cancel_batches()

    return cancel_job

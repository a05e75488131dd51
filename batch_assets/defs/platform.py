"""What every pipeline of the code location shares — sources, each pipeline's jobs, `submit_month`,
`cancel_month`, the batch sensor, the schedule, the resources — built from the pipeline components the defs
folder holds. No `from __future__ import annotations`: Dagster reads the context parameter's annotation."""

import dagster as dg

from batch_assets.defs.definitions import platform_definitions
from batch_assets.defs.pipeline_component import BatchPipelines
from batch_assets.settings import PlatformSettings


@dg.definitions
def platform(context: dg.ComponentLoadContext) -> dg.Definitions:
    pipelines = [spec for component in context.component_tree.get_all_components(BatchPipelines)
                 for spec in component.pipeline_specs()]
    return platform_definitions(PlatformSettings.from_env(), pipelines)

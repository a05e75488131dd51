"""The pipelines that ship, declared in Python (batch_assets/pipelines/catalog.py), as a component of the code
location. No `from __future__ import annotations`: Dagster reads the loader's return annotation as a class."""

import dagster as dg

from batch_assets.defs.pipeline_component import PythonPipelines
from batch_assets.pipelines.catalog import PIPELINES


@dg.component_instance
def shipped_pipelines(context: dg.ComponentLoadContext) -> PythonPipelines:
    return PythonPipelines(PIPELINES)

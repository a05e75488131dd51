"""Pipelines as Dagster components. A pipeline declared in YAML is a `PipelineComponent` (a folder under
batch_assets/defs/ with a defs.yaml); the pipelines declared in Python are one `PythonPipelines` component. Each
builds its pipelines' assets and checks; the platform (defs/platform.py) finds every such component in the defs
folder and gives each pipeline its jobs and a place in the batch sensor.

No `from __future__ import annotations` here: Dagster reads a component loader's return annotation as a class.
"""

from abc import abstractmethod
from dataclasses import dataclass

import dagster as dg

from batch_assets.defs.definitions import pipeline_definitions
from batch_assets.pipelines.declared import PipelineDeclaration
from batch_assets.pipelines.spec import PipelineSpec
from batch_assets.settings import PlatformSettings


class BatchPipelines(dg.Component):
    """A component that declares batch pipelines."""

    @abstractmethod
    def pipeline_specs(self) -> tuple[PipelineSpec, ...]:
        """The pipelines, as the platform runs them."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = PlatformSettings.from_env()
        return dg.Definitions.merge(*(pipeline_definitions(spec, settings) for spec in self.pipeline_specs()))


@dataclass
class PythonPipelines(BatchPipelines):
    """Pipelines declared in Python (`PipelineSpec`s), e.g. the three that ship (`catalog.PIPELINES`)."""

    pipelines: tuple[PipelineSpec, ...]

    def pipeline_specs(self) -> tuple[PipelineSpec, ...]:
        return self.pipelines


class PipelineComponent(BatchPipelines, dg.Resolvable, PipelineDeclaration):
    """A batch pipeline declared in YAML: endpoint, model, prompt, source, output table and columns, labels of a
    classifier, checks; dotted paths to Python functions where a template is not enough. The attributes are
    `batch_assets.pipelines.declared.PipelineDeclaration`'s."""

    def pipeline_specs(self) -> tuple[PipelineSpec, ...]:
        return (self.to_spec(),)

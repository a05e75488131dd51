"""Pipelines as Dagster components. A pipeline declared in YAML is a `PipelineComponent` (a folder under
batch_assets/defs/ with a defs.yaml); the pipelines declared in Python are one `PythonPipelines` component. Each
builds its pipelines' assets and checks; the platform (defs/platform.py) finds every such component in the defs
folder and gives each pipeline its jobs and a place in the batch sensor.

No `from __future__ import annotations` here: Dagster reads a component loader's return annotation as a class.
"""

import re
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pydantic

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


class PipelineScaffolder(dg.Scaffolder):
    """`dg scaffold defs batch_assets.defs.pipeline_component.PipelineComponent <name>` writes a pipeline that
    runs as it is — a sentiment classifier of the month's documents, with its accuracy check — to edit from."""

    def scaffold(self, request: dg.ScaffoldRequest[Any]) -> None:
        dg.scaffold_component(request, starter_pipeline(request.target_path.name))


def starter_pipeline(folder_name: str) -> dict[str, Any]:
    name = re.sub(r"[^a-z0-9_]", "_", folder_name.lower()).strip("_") or "pipeline"
    name = name if name[0].isalpha() else f"p_{name}"
    return {
        "name": name,
        "description": "Labels each document positive, negative or neutral.",
        "endpoint": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "prompt": "Label the movie review positive, negative or neutral. Reply in JSON.",
        "input": "Review: {text}",
        "max_tokens": 16,
        "temperature": 0.0,
        "labels": ["positive", "negative", "neutral"],
        "source": "raw_documents",
        "output": {"table": f"{name}_rows", "columns": [
            {"name": "document_id", "value": "item_id", "description": "raw_documents.id"},
            {"name": "label", "value": "label", "description": "predicted label (NULL when not a valid one)"},
            {"name": "gold_label", "value": "source.label", "description": "the document's own label"},
        ]},
        "checks": [{"name": f"{name}_accuracy", "accuracy": {"column": "label", "gold": "gold_label"}}],
    }


@dg.scaffold_with(PipelineScaffolder)
class PipelineComponent(BatchPipelines, dg.Resolvable):
    """A batch pipeline declared in YAML: endpoint, model, prompt, source, output table and columns, labels of a
    classifier, checks; dotted paths to Python functions where a template is not enough. The attributes are
    `batch_assets.pipelines.declared.PipelineDeclaration`'s.

    The component holds its declaration rather than being one: Dagster names a component's attribute schema
    `model` (a class method), and a pipeline's `model` is the model its requests name."""

    def __init__(self, declaration: PipelineDeclaration) -> None:
        self.declaration = declaration

    @classmethod
    def model(cls) -> type[pydantic.BaseModel]:
        return PipelineDeclaration

    @classmethod
    def resolve_from_model(cls, context: dg.ResolutionContext, model: pydantic.BaseModel) -> "PipelineComponent":
        # Templates in the attributes ({{ env.NAME }} ...) render as in any component, then the declaration checks.
        attributes = context.resolve_value(model.model_dump(exclude_unset=True))
        return cls(PipelineDeclaration.model_validate(attributes))

    def pipeline_specs(self) -> tuple[PipelineSpec, ...]:
        return (self.declaration.to_spec(),)

"""Pipelines: what each one asks of the model and how answers become rows. No Dagster import.

`catalog.PIPELINES` lists the shipped ones; `defs/` turns each `PipelineSpec` into assets.
"""

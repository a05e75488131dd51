"""One monthly partitioning for every asset, so a month lines up across lineage."""

from __future__ import annotations

from datetime import date

import dagster as dg

from batch_assets.settings import PlatformSettings


def monthly_partitions(settings: PlatformSettings) -> dg.MonthlyPartitionsDefinition:
    return dg.MonthlyPartitionsDefinition(start_date=settings.first_month)


def partition_month(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)

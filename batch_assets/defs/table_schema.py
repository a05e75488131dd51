"""Table column schemas for the catalog, from the warehouse's own table definitions."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from batch_assets.warehouse import TABLES


def table_schema(table: str, descriptions: Mapping[str, str] | None = None,
                 columns: Mapping[str, str] | None = None) -> dg.TableSchema:
    """The schema of a shipped table, or of a declared output table from its `columns` (name → DuckDB type)."""
    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(name, sql_type.replace("{dims}", "N"), description=descriptions.get(name))
        for name, sql_type in (columns if columns is not None else TABLES[table]).items()
    ])

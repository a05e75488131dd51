"""Output tables the warehouse does not ship: declared per connection (as the warehouse resource does), never in a
global, and described by the warehouse itself once created (columns from its catalog, key from its primary key)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from batch_assets import warehouse as wh
from batch_assets.warehouse import TableDeclaration, WarehouseError

MARCH = date(2024, 3, 1)
TITLES = TableDeclaration("document_titles", {"month": "DATE", "document_id": "VARCHAR", "title": "VARCHAR",
                                              "vector": "FLOAT[]"}, ("month", "document_id"))


def titles(ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"document_id": ids, "title": [f"title of {i}" for i in ids],
                         "vector": [[1.0, 2.0]] * len(ids)}, schema_overrides={"vector": pl.List(pl.Float32)})


def test_a_declared_table_is_created_written_and_read_in_key_order(tmp_path: Path) -> None:
    con = wh.connect(tmp_path / "w.duckdb", tables=[TITLES])
    assert wh.read_table(con, "document_titles").schema["vector"] == pl.List(pl.Float32)  # empty, typed
    assert wh.replace_partition(con, "document_titles", MARCH, titles(["b", "c", "a"])) == 3
    rows = wh.read_table(con, "document_titles", MARCH)
    assert rows["document_id"].to_list() == ["a", "b", "c"] and rows["vector"].to_list()[0] == [1.0, 2.0]
    with pytest.raises(WarehouseError, match="nothing was changed"):  # the key is the table's primary key
        wh.replace_partition(con, "document_titles", MARCH, titles(["a", "a"]))
    assert wh.read_table(con, "document_titles", MARCH).height == 3
    con.close()
    # Another process that declares nothing (a CLI, a reader) still reads and writes it: the table describes itself.
    again = wh.connect(tmp_path / "w.duckdb")
    assert wh.replace_partition(again, "document_titles", MARCH, titles(["z"])) == 1
    assert wh.read_table(again, "document_titles")["title"].to_list() == ["title of z"]
    again.close()


def test_declaring_a_table_changes_nothing_for_anybody_else(tmp_path: Path) -> None:
    shipped = dict(wh.TABLES)
    wh.connect(tmp_path / "one.duckdb", tables=[TITLES]).close()
    assert dict(wh.TABLES) == shipped
    with pytest.raises(TypeError):
        wh.TABLES["document_titles"] = dict(TITLES.columns)  # type: ignore[index]
    other = wh.connect(tmp_path / "other.duckdb")
    with pytest.raises(WarehouseError, match="unknown warehouse table 'document_titles'.*declare it"):
        wh.read_table(other, "document_titles")
    other.close()


def test_a_declaration_that_contradicts_the_warehouse_says_what_to_do(tmp_path: Path) -> None:
    wh.connect(tmp_path / "w.duckdb", tables=[TITLES]).close()
    changed = TableDeclaration(TITLES.name, {**TITLES.columns, "title": "BIGINT"}, TITLES.key)
    with pytest.raises(WarehouseError, match="title is VARCHAR in this warehouse but declared BIGINT.*DROP TABLE"):
        wh.connect(tmp_path / "w.duckdb", tables=[changed])
    grown = TableDeclaration(TITLES.name, {**TITLES.columns, "score": "DOUBLE"}, TITLES.key)
    con = wh.connect(tmp_path / "w.duckdb", tables=[grown])  # a new column is added, like a shipped table's
    assert "score" in wh.table_columns(con, "document_titles")
    con.close()


@pytest.mark.parametrize(("name", "columns", "key", "message"), [
    ("document_labels", {"month": "DATE"}, ("month",), "ships"),
    ("titles", {"id": "VARCHAR"}, ("month",), "needs a 'month' DATE column"),
    ("titles", {"month": "DATE", "v": "FLOAT[N]"}, ("month",), "unsupported column types"),
    ("titles", {"month": "DATE", "id": "VARCHAR"}, ("id",), "must start with 'month'"),
    ("Titles!", {"month": "DATE"}, ("month",), "lower-case"),
])
def test_a_table_the_warehouse_cannot_hold_is_refused_when_declared(name: str, columns: dict[str, str],
                                                                    key: tuple[str, ...], message: str) -> None:
    with pytest.raises(WarehouseError, match=message):
        TableDeclaration(name, columns, key)

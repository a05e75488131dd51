"""The DuckDB warehouse: month-replace writes, FLOAT[N] embeddings, nearest documents, label accuracy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest

from batch_assets import warehouse as wh
from batch_assets.warehouse import WarehouseError

MARCH, APRIL = date(2024, 3, 1), date(2024, 4, 1)


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    connection = wh.connect(tmp_path / "nested" / "warehouse.duckdb")
    yield connection
    connection.close()


def docs(month: date, ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "month": [month] * len(ids),
            "id": ids,
            "text": [f"text of {i}" for i in ids],
            "created_at": [datetime(month.year, month.month, 2, 10)] * len(ids),
            "label": ["positive"] * len(ids),
        }
    )


def costs(batch_ids: list[str], usd: float = 1.0) -> pl.DataFrame:
    n = len(batch_ids)
    return pl.DataFrame(
        {
            "batch_id": batch_ids,
            "model": ["m"] * n,
            "requests": [10] * n,
            "prompt_tokens": [100] * n,
            "completion_tokens": [5] * n,
            "cached_tokens": [0] * n,
            "reasoning_tokens": [0] * n,
            "batch_usd": [usd] * n,
            "standard_usd": [2 * usd] * n,
            "saving_usd": [usd] * n,
        }
    )


def embeddings(ids: list[str], vectors: list[list[float]], dtype: pl.DataType | None = None) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "document_id": ids,
            "model": ["emb"] * len(ids),
            "dims": [len(vectors[0])] * len(ids),
            "embedding": vectors,
            "batch_id": ["b1"] * len(ids),
            "attempt": [1] * len(ids),
        },
        schema_overrides={"embedding": dtype or pl.List(pl.Float32)},
    )
    return frame


def test_connect_creates_the_folder_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "w.duckdb"
    con = wh.connect(path)
    tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables == set(wh.TABLES) - {"document_embeddings"}  # created at the first write, which fixes N
    con.close()
    assert path.is_file()
    again = wh.connect(path, read_only=True)
    assert wh.read_table(again, "raw_documents").height == 0
    again.close()


def test_read_only_without_a_warehouse_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="materialize"):
        wh.connect(tmp_path / "missing.duckdb", read_only=True)


def test_a_second_writer_process_gets_a_clear_error(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    code = (
        "from batch_assets import warehouse as wh\n"
        "try:\n"
        f"    wh.connect({str(tmp_path / 'nested' / 'warehouse.duckdb')!r})\n"
        "except wh.WarehouseError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "one writer at a time" in out.stdout and "concurrency pool" in out.stdout, out.stderr


def test_replace_partition_replaces_only_its_month(con: duckdb.DuckDBPyConnection) -> None:
    assert wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["a", "b"])) == 2
    assert wh.replace_partition(con, "raw_documents", "2024-04", docs(APRIL, ["c"])) == 1
    assert wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["d", "e", "f"])) == 3
    assert wh.read_documents(con, MARCH)["id"].to_list() == ["d", "e", "f"]
    assert wh.read_documents(con, APRIL)["id"].to_list() == ["c"]
    assert wh.read_table(con, "raw_documents").height == 4
    assert wh.read_documents(con, "2024-03").columns == ["id", "text", "created_at", "label", "month"]
    # an empty frame empties the month
    assert wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, [])) == 0
    assert wh.read_table(con, "raw_documents")["id"].to_list() == ["c"]


def test_month_and_pipeline_are_filled_in_and_only_that_pipeline_is_replaced(
    con: duckdb.DuckDBPyConnection,
) -> None:
    wh.replace_partition(con, "batch_costs", MARCH, costs(["e1", "e2"]), pipeline="embeddings")
    wh.replace_partition(con, "batch_costs", MARCH, costs(["s1"]), pipeline="sentiment")
    wh.replace_partition(con, "batch_costs", APRIL, costs(["e3"]), pipeline="embeddings")
    wh.replace_partition(con, "batch_costs", MARCH, costs(["e9"], usd=3.0), pipeline="embeddings")
    rows = wh.read_table(con, "batch_costs").select("pipeline", "month", "batch_id").rows()
    assert rows == [
        ("embeddings", MARCH, "e9"),
        ("embeddings", APRIL, "e3"),
        ("sentiment", MARCH, "s1"),
    ]
    assert wh.read_table(con, "batch_costs", MARCH, pipeline="embeddings")["batch_usd"].to_list() == [3.0]


def test_pipeline_is_required_exactly_for_shared_tables(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(WarehouseError, match="pass pipeline="):
        wh.replace_partition(con, "batch_costs", MARCH, costs(["x"]))
    with pytest.raises(WarehouseError, match="no pipeline column"):
        wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["a"]), pipeline="embeddings")
    frame = costs(["x"]).with_columns(pl.lit("sentiment").alias("pipeline"))
    with pytest.raises(WarehouseError, match="pipeline 'sentiment', not embeddings"):
        wh.replace_partition(con, "batch_costs", MARCH, frame, pipeline="embeddings")


def test_a_bad_frame_leaves_the_old_rows(con: duckdb.DuckDBPyConnection) -> None:
    wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["a", "b"]))
    unparseable = docs(MARCH, ["x", "y"]).with_columns(pl.Series("created_at", ["2024-03-01", "not a time"]))
    with pytest.raises(WarehouseError, match="nothing was changed"):
        wh.replace_partition(con, "raw_documents", MARCH, unparseable)
    with pytest.raises(WarehouseError, match=r"missing label; unexpected gold"):
        wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["z"]).rename({"label": "gold"}))
    with pytest.raises(WarehouseError, match=r"1 rows have month '2024-04-01', not 2024-03-01"):
        wh.replace_partition(con, "raw_documents", MARCH, pl.concat([docs(MARCH, ["p"]), docs(APRIL, ["q"])]))
    with pytest.raises(WarehouseError, match="unknown warehouse table"):
        wh.replace_partition(con, "documents", MARCH, docs(MARCH, ["a"]))
    assert wh.read_documents(con, MARCH)["id"].to_list() == ["a", "b"]
    # the connection is still usable after a rolled-back write
    assert wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["c"])) == 1


@pytest.mark.parametrize("dtype", [pl.List(pl.Float32), pl.List(pl.Float64), pl.Array(pl.Float32, 3)])
def test_embeddings_round_trip_as_fixed_size_arrays(con: duckdb.DuckDBPyConnection, dtype: pl.DataType) -> None:
    assert wh.read_table(con, "document_embeddings").height == 0  # before any write: empty, with columns
    vectors = [[0.25, -1.5, 3.0], [1.0, 0.0, 0.0]]
    assert wh.replace_partition(con, "document_embeddings", MARCH, embeddings(["a", "b"], vectors, dtype)) == 2
    assert wh.embedding_dims(con) == 3
    back = wh.read_table(con, "document_embeddings", MARCH)
    assert back.schema["embedding"] == pl.Array(pl.Float32, 3)
    assert back["embedding"].to_list() == vectors
    assert back["dims"].to_list() == [3, 3] and back["month"].to_list() == [MARCH, MARCH]


def test_embeddings_of_another_width_are_refused(con: duckdb.DuckDBPyConnection) -> None:
    wh.replace_partition(con, "document_embeddings", MARCH, embeddings(["a"], [[1.0, 0.0, 0.0]]))
    with pytest.raises(WarehouseError) as caught:
        wh.replace_partition(con, "document_embeddings", APRIL, embeddings(["b"], [[1.0, 0.0]]))
    assert str(caught.value) == (
        "document_embeddings holds FLOAT[3] vectors; this write has 2 dims: keep `dimensions` the same or drop "
        "the table (DROP TABLE document_embeddings) to start over"
    )
    ragged = embeddings(["c", "d"], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).with_columns(
        pl.Series("embedding", [[1.0, 0.0, 0.0], [1.0]], dtype=pl.List(pl.Float32))
    )
    with pytest.raises(WarehouseError, match="same length; found 1 to 3"):
        wh.replace_partition(con, "document_embeddings", MARCH, ragged)
    assert wh.read_table(con, "document_embeddings")["document_id"].to_list() == ["a"]


def test_embeddings_from_parquet_files_and_lazy_frames(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    first = embeddings(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])
    second = embeddings(["c"], [[0.5, 0.5]], pl.Array(pl.Float32, 2))
    first.write_parquet(tmp_path / "1.parquet")
    second.write_parquet(tmp_path / "2.parquet")
    paths = [tmp_path / "1.parquet", str(tmp_path / "2.parquet")]
    assert wh.replace_partition_from_parquet(con, "document_embeddings", MARCH, paths) == 3
    assert wh.replace_partition(con, "document_embeddings", APRIL, first.lazy()) == 2
    back = wh.read_table(con, "document_embeddings")
    assert back.select("month", "document_id").rows() == [
        (MARCH, "a"),
        (MARCH, "b"),
        (MARCH, "c"),
        (APRIL, "a"),
        (APRIL, "b"),
    ]
    assert back["embedding"].to_list()[2] == [0.5, 0.5]
    with pytest.raises(WarehouseError, match="not found"):
        wh.replace_partition_from_parquet(con, "document_embeddings", MARCH, tmp_path / "3.parquet")
    with pytest.raises(WarehouseError, match="FLOAT\\[2\\] vectors; this write has 3 dims"):
        embeddings(["z"], [[1.0, 2.0, 3.0]]).write_parquet(tmp_path / "3.parquet")
        wh.replace_partition_from_parquet(con, "document_embeddings", MARCH, tmp_path / "3.parquet")
    assert wh.read_table(con, "document_embeddings", MARCH).height == 3


@pytest.mark.parametrize("ordered", [True, False])
def test_many_parquet_files_load_whole_and_leave_the_connections_order_setting_as_it_was(
        con: duckdb.DuckDBPyConnection, tmp_path: Path, ordered: bool) -> None:
    con.execute(f"SET preserve_insertion_order = {ordered}")
    ids = [f"doc-{i:05d}" for i in range(30_000)]
    for part in range(3):  # files DuckDB reads side by side, their rows in no particular order
        embeddings(ids[part::3], [[float(i), 1.0] for i in range(part, 30_000, 3)]).write_parquet(
            tmp_path / f"{part}.parquet", row_group_size=1_000)
    paths = sorted(tmp_path.glob("*.parquet"))
    assert wh.replace_partition_from_parquet(con, "document_embeddings", MARCH, paths) == 30_000
    back = wh.read_table(con, "document_embeddings", MARCH)
    assert back["document_id"].to_list() == ids  # reads are in key order, whatever order the rows sit in
    assert [v[0] for v in back["embedding"].to_list()] == [float(i) for i in range(30_000)]
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0] is ordered
    pl.DataFrame({"document_id": ["x"], "nope": [1]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(WarehouseError):  # a load that fails changes nothing, the setting included
        wh.replace_partition_from_parquet(con, "document_embeddings", MARCH, tmp_path / "bad.parquet")
    assert wh.read_table(con, "document_embeddings", MARCH).height == 30_000
    assert con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0] is ordered


def test_rows_built_frame_by_frame_stream_into_one_replace(con: duckdb.DuckDBPyConnection) -> None:
    wh.replace_partition(con, "document_embeddings", MARCH, embeddings(["old"], [[1.0, 0.0]]))
    wh.replace_partition(con, "document_embeddings", APRIL, embeddings(["april"], [[1.0, 0.0]]))
    pulled: list[int] = []

    def frames(fail_after: int | None = None) -> Iterator[pl.DataFrame]:
        for i, ids in enumerate((["a", "b"], ["c"], [])):
            if fail_after is not None and i == fail_after:
                raise ValueError("the output builder broke on chunk 2")
            pulled.append(i)
            yield embeddings(ids or ["x"], [[0.5, 0.5]] * len(ids or ["x"]), pl.Array(pl.Float32, 2)).head(len(ids))

    assert wh.replace_partition_from_frames(con, "document_embeddings", MARCH, frames()) == 3
    assert pulled == [0, 1, 2]
    back = wh.read_table(con, "document_embeddings")
    assert back.select("month", "document_id").rows() == [(MARCH, "a"), (MARCH, "b"), (MARCH, "c"), (APRIL, "april")]
    # a builder failing midway: its own error, and the month as it was
    with pytest.raises(ValueError, match="broke on chunk 2"):
        wh.replace_partition_from_frames(con, "document_embeddings", MARCH, frames(fail_after=1))
    assert wh.read_table(con, "document_embeddings", MARCH)["document_id"].to_list() == ["a", "b", "c"]
    # vectors of another width in a later frame: refused, nothing changed
    mixed = iter([embeddings(["d"], [[1.0, 0.0]]), embeddings(["e"], [[1.0, 0.0, 0.0]])])
    with pytest.raises(WarehouseError, match="same length; found 2 and 3"):
        wh.replace_partition_from_frames(con, "document_embeddings", MARCH, mixed)
    assert wh.read_table(con, "document_embeddings", MARCH).height == 3
    with pytest.raises(WarehouseError, match="leave the month column out"):
        wh.replace_partition_from_frames(con, "document_embeddings", MARCH,
                                         [embeddings(["f"], [[1.0, 0.0]]).with_columns(month=pl.lit(MARCH))])


def test_nearest_documents_ranks_by_cosine_similarity(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(WarehouseError, match="no embeddings yet: materialize the embeddings pipeline"):
        wh.nearest_documents(con, [1.0, 0.0, 0.0])
    wh.replace_partition(con, "raw_documents", MARCH, docs(MARCH, ["x", "y", "z", "w"]))
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]
    wh.replace_partition(con, "document_embeddings", MARCH, embeddings(["x", "y", "z", "w"], vectors))
    wh.replace_partition(con, "document_embeddings", APRIL, embeddings(["q"], [[0.9, 0.1, 0.0]]))
    best = wh.nearest_documents(con, [2.0, 0.0, 0.0], month=MARCH, k=3)
    assert best.columns == ["document_id", "month", "text", "score"]
    assert best["document_id"].to_list() == ["x", "z", "y"]
    assert best["score"].to_list() == pytest.approx([1.0, 2**-0.5, 0.0], abs=1e-6)
    assert best["text"].to_list() == ["text of x", "text of z", "text of y"]
    everywhere = wh.nearest_documents(con, [1.0, 0.0, 0.0], k=10)
    assert everywhere["document_id"].to_list() == ["x", "q", "z", "y", "w"]
    assert everywhere.filter(pl.col("document_id") == "q")["text"][0] is None  # no raw document for it
    with pytest.raises(WarehouseError, match="query vector has 2 dims but document_embeddings holds FLOAT\\[3\\]"):
        wh.nearest_documents(con, [1.0, 0.0])
    with pytest.raises(WarehouseError, match="all zeros"):
        wh.nearest_documents(con, [0.0, 0.0, 0.0])
    with pytest.raises(WarehouseError, match="no embeddings for 2024-05 yet"):
        wh.nearest_documents(con, [1.0, 0.0, 0.0], month="2024-05")


def test_label_accuracy_and_confusion(con: duckdb.DuckDBPyConnection) -> None:
    assert wh.label_accuracy(con, MARCH)[0] is None
    labels = pl.DataFrame(
        {
            "document_id": ["a", "b", "c", "d", "e", "f"],
            "model": ["m"] * 6,
            "label": ["positive", "negative", "positive", None, "neutral", "positive"],
            "gold_label": ["positive", "negative", "negative", "neutral", "neutral", None],
            "raw_content": ["{}"] * 6,
            "batch_id": ["b"] * 6,
            "attempt": [1] * 6,
        }
    )
    wh.replace_partition(con, "document_labels", MARCH, labels)
    accuracy, confusion, n_labelled = wh.label_accuracy(con, "2024-03")
    assert n_labelled == 5  # f has no gold label
    assert accuracy == pytest.approx(3 / 5)  # d's missing label counts as wrong
    assert confusion.rows() == [
        ("negative", "negative", 1),
        ("negative", "positive", 1),
        ("neutral", "neutral", 1),
        ("neutral", None, 1),
        ("positive", "positive", 1),
    ]
    accuracy, confusion, n_labelled = wh.label_accuracy(con, MARCH, model="another-model")
    assert accuracy is None and n_labelled == 0 and confusion.height == 0


def test_reads_refuse_unknown_tables(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(WarehouseError, match="use one of raw_documents"):
        wh.read_table(con, "embeddings")


def test_a_user_reads_results_as_polars_with_duckdbs_own_pl(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = wh.connect(path)
    wh.replace_partition(con, "document_embeddings", MARCH, embeddings(["a", "b"], [[1.0, 0.0], [0.0, 1.0]]))
    wh.replace_partition(con, "batch_costs", MARCH, costs(["b1"]), pipeline="embeddings")
    con.close()
    with duckdb.connect(str(path), read_only=True) as reader:  # as in the README, from the project's environment
        vectors = reader.sql("SELECT document_id, embedding FROM document_embeddings ORDER BY document_id").pl()
        spent = reader.sql("SELECT pipeline, sum(batch_usd) AS usd FROM batch_costs GROUP BY ALL").pl()
    assert isinstance(vectors, pl.DataFrame)
    assert vectors.schema["embedding"] == pl.Array(pl.Float32, 2)
    assert vectors["embedding"].to_list() == [[1.0, 0.0], [0.0, 1.0]]
    assert spent.to_dicts() == [{"pipeline": "embeddings", "usd": 1.0}]

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest

from batch_assets.batching.encodings import count_text_tokens
from batch_assets.batching.prepare import prepare_chat_requests, prepare_embedding_requests
from batch_assets.batching.protocol import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL
from batch_assets.batching.request_files import BatchLimits, PreparedRequest, RequestFile, write_request_files
from batch_assets.batching.requests import custom_ids_for
from batch_assets.batching.tokens import count_chat_tokens

EMB = "text-embedding-3-small"


def emb(i: int, text: str = "some text", model: str = EMB, tokens: int = 10, n_inputs: int = 1) -> PreparedRequest:
    body = {"model": model, "input": text if n_inputs == 1 else [text] * n_inputs}
    return PreparedRequest(f"id-{i}", EMBEDDINGS_URL, model, body, tokens, n_inputs)


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def check_files(files: list[RequestFile]) -> None:
    """What a user would check: every file parses back, matches its record, and holds one url+model."""
    for f in files:
        raw = f.path.read_bytes()
        assert len(raw) == f.n_bytes and raw.endswith(b"\n")
        lines = read_lines(f.path)
        assert len(lines) == f.n_requests == len(f.custom_ids)
        assert [x["custom_id"] for x in lines] == list(f.custom_ids)
        for x in lines:
            assert set(x) == {"custom_id", "method", "url", "body"}
            assert x["method"] == "POST" and x["url"] == f.url and x["body"]["model"] == f.model
        assert not f.path.with_name(f.path.name + ".tmp").exists()
    paths = [f.path for f in files]
    assert len(set(paths)) == len(paths)


def test_empty_input_writes_nothing(tmp_path: Path) -> None:
    assert write_request_files([], tmp_path, limits=BatchLimits(), file_stem="x") == []
    assert list(tmp_path.iterdir()) == []


def test_one_file_round_trips_exactly(tmp_path: Path) -> None:
    reqs = [emb(i, text=f"text {i} ünïcödé 🙂") for i in range(5)]
    [f] = write_request_files(reqs, tmp_path, limits=BatchLimits(), file_stem="emb-2024-01")
    check_files([f])
    assert f.path == tmp_path / "emb-2024-01-text-embedding-3-small-000.jsonl"
    assert (f.url, f.model, f.n_requests, f.input_tokens, f.n_inputs) == (EMBEDDINGS_URL, EMB, 5, 50, 5)
    assert read_lines(f.path)[0] == {
        "custom_id": "id-0", "method": "POST", "url": "/v1/embeddings",
        "body": {"model": EMB, "input": "text 0 ünïcödé 🙂"},
    }
    # DuckDB/polars-style readers parse it too.
    assert pl.read_ndjson(f.path).height == 5


def test_split_at_request_limit(tmp_path: Path) -> None:
    files = write_request_files((emb(i) for i in range(25)), tmp_path,
                                limits=BatchLimits(max_requests_per_file=10), file_stem="s")
    check_files(files)
    assert [f.n_requests for f in files] == [10, 10, 5]
    assert [f.path.name for f in files] == [f"s-{EMB}-00{i}.jsonl" for i in range(3)]
    assert [c for f in files for c in f.custom_ids] == [f"id-{i}" for i in range(25)]


def test_split_at_byte_limit_counts_bytes_as_written(tmp_path: Path) -> None:
    one_line = len(orjson.dumps({"custom_id": "id-0", "method": "POST", "url": EMBEDDINGS_URL,
                                 "body": {"model": EMB, "input": "é" * 10}})) + 1
    limit = one_line * 3  # exactly three lines fit
    files = write_request_files((emb(i, text="é" * 10) for i in range(7)), tmp_path,
                                limits=BatchLimits(max_bytes_per_file=limit), file_stem="b")
    check_files(files)
    assert [f.n_requests for f in files] == [3, 3, 1]
    assert files[0].n_bytes == limit and all(f.n_bytes <= limit for f in files)


def test_split_at_token_budget_and_per_model_override(tmp_path: Path) -> None:
    reqs = [emb(i, tokens=40) for i in range(5)] + [emb(i + 5, model="text-embedding-3-large", tokens=40)
                                                    for i in range(5)]
    limits = BatchLimits(max_tokens_per_file=100, tokens_per_file_by_model={"text-embedding-3-large": 200})
    files = write_request_files(reqs, tmp_path, limits=limits, file_stem="t")
    check_files(files)
    by_model = {m: [f.input_tokens for f in files if f.model == m] for m in (EMB, "text-embedding-3-large")}
    assert by_model == {EMB: [80, 80, 40], "text-embedding-3-large": [200]}


def test_split_at_embedding_inputs_limit(tmp_path: Path) -> None:
    reqs = [emb(i, n_inputs=4) for i in range(5)]
    files = write_request_files(reqs, tmp_path, limits=BatchLimits(max_embedding_inputs_per_file=10),
                                file_stem="e")
    check_files(files)
    assert [f.n_inputs for f in files] == [8, 8, 4]


def test_inputs_limit_does_not_apply_to_chat(tmp_path: Path) -> None:
    chat = [PreparedRequest(f"c{i}", CHAT_COMPLETIONS_URL, "gpt-4o-mini",
                            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, 9)
            for i in range(5)]
    [f] = write_request_files(chat, tmp_path, limits=BatchLimits(max_embedding_inputs_per_file=2), file_stem="c")
    assert f.n_requests == 5 and f.n_inputs == 0


def test_mixed_models_and_endpoints_split_per_model_and_interleave(tmp_path: Path) -> None:
    reqs: list[PreparedRequest] = []
    for i in range(30):
        model = ["text-embedding-3-small", "local/fake-embedder", "text-embedding-3-large"][i % 3]
        reqs.append(emb(i, model=model))
    reqs.append(PreparedRequest("chat-1", CHAT_COMPLETIONS_URL, "local/fake-chat",
                                {"model": "local/fake-chat", "messages": [{"role": "user", "content": "x"}]}, 9))
    files = write_request_files(reqs, tmp_path, limits=BatchLimits(max_requests_per_file=4), file_stem="m")
    check_files(files)
    counts: dict[str, int] = {}
    for f in files:
        counts[f.model] = counts.get(f.model, 0) + f.n_requests
    assert counts == {EMB: 10, "local/fake-embedder": 10, "text-embedding-3-large": 10, "local/fake-chat": 1}
    names = sorted(f.path.name for f in files if f.model == "local/fake-embedder")
    assert names == [f"m-local_fake-embedder-00{i}.jsonl" for i in range(3)]
    # Deterministic: the same input gives the same files.
    again = write_request_files(reqs, tmp_path / "again", limits=BatchLimits(max_requests_per_file=4), file_stem="m")
    assert [(f.path.name, f.custom_ids) for f in again] == [(f.path.name, f.custom_ids) for f in files]


def test_duplicate_custom_id_is_an_error_and_leaves_no_files(tmp_path: Path) -> None:
    reqs = [emb(i) for i in range(5)] + [emb(2)]
    with pytest.raises(ValueError, match="duplicate custom_id 'id-2'"):
        write_request_files(reqs, tmp_path, limits=BatchLimits(max_requests_per_file=2), file_stem="d")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "req", "match"),
    [
        (BatchLimits(max_bytes_per_file=50), emb(0, text="x" * 100), "bytes as a JSONL line"),
        (BatchLimits(max_tokens_per_file=5), emb(0, tokens=6), "token budget of 5"),
        (BatchLimits(tokens_per_file_by_model={EMB: 5}), emb(0, tokens=6), "raise the budget"),
        (BatchLimits(max_embedding_inputs_per_file=3), emb(0, n_inputs=4), "fewer inputs per request"),
    ],
)
def test_a_request_too_big_for_any_file_says_what_to_do(
    tmp_path: Path, limits: BatchLimits, req: PreparedRequest, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        write_request_files([emb(1, text="ok", tokens=1), req], tmp_path, limits=limits, file_stem="o")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_url_and_bad_stem(tmp_path: Path) -> None:
    bad = PreparedRequest("a", "/v1/moderations", "gpt-4o", {"model": "gpt-4o"}, 1)
    with pytest.raises(ValueError, match="unsupported endpoint"):
        write_request_files([bad], tmp_path, limits=BatchLimits(), file_stem="u")
    with pytest.raises(ValueError, match="file_stem"):
        write_request_files([], tmp_path, limits=BatchLimits(), file_stem="a/b")


def test_body_model_must_match_the_request_model(tmp_path: Path) -> None:
    bad = PreparedRequest("a", EMBEDDINGS_URL, EMB, {"model": "text-embedding-3-large", "input": "x"}, 1)
    with pytest.raises(ValueError, match="differs from model"):
        write_request_files([bad], tmp_path, limits=BatchLimits(), file_stem="u")


def test_more_than_999_files_keep_their_order(tmp_path: Path) -> None:
    files = write_request_files((emb(i) for i in range(1001)), tmp_path,
                                limits=BatchLimits(max_requests_per_file=1), file_stem="many")
    assert [f.custom_ids[0] for f in files] == [f"id-{i}" for i in range(1001)]
    assert files[-1].path.name == f"many-{EMB}-1000.jsonl"


def test_batch_limits_validation_and_presets() -> None:
    for kwargs in ({"max_requests_per_file": 0}, {"max_bytes_per_file": -1}, {"max_tokens_per_file": 0},
                   {"tokens_per_file_by_model": {"m": 0}}, {"max_embedding_inputs_per_file": 1.5}):
        with pytest.raises(ValueError, match="positive"):
            BatchLimits(**kwargs)  # type: ignore[arg-type]
    limits = BatchLimits.openai({"gpt-4o-mini": 2_000_000})
    assert (limits.max_requests_per_file, limits.max_bytes_per_file, limits.max_embedding_inputs_per_file) == (
        50_000, 200_000_000, 50_000)
    assert limits.token_budget("gpt-4o-mini") == 2_000_000 and limits.token_budget("gpt-4o") is None
    assert BatchLimits(max_tokens_per_file=7).token_budget("x") == 7


def test_prepare_embedding_requests_counts_tokens_and_builds_ids(tmp_path: Path) -> None:
    ids = ["doc 1", "doc-2", "d" * 80]
    texts = ["hello world", "お誕生日おめでとう", "a longer review text"]
    reqs = list(prepare_embedding_requests(ids, texts, EMB, dimensions=256, custom_id_prefix="a1-"))
    assert [r.custom_id for r in reqs] == custom_ids_for(ids, "a1-")
    assert [r.input_tokens for r in reqs] == count_text_tokens(texts, EMB) == [2, 9, 4]
    assert reqs[0].body == {"model": EMB, "input": "hello world", "dimensions": 256}
    assert all(r.url == EMBEDDINGS_URL and r.n_inputs == 1 for r in reqs)
    files = write_request_files(reqs, tmp_path, limits=BatchLimits(), file_stem="p")
    check_files(files)
    assert files[0].input_tokens == 15


def test_prepare_embedding_requests_checks_eagerly() -> None:
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        prepare_embedding_requests(["a", "b"], ["x"], EMB)
    with pytest.raises(ValueError, match="item 'b' is empty"):
        prepare_embedding_requests(["a", "b"], ["x", ""], EMB)
    with pytest.raises(ValueError, match="dimensions"):
        prepare_embedding_requests(["a"], ["x"], EMB, dimensions=-1)


def test_prepare_chat_requests(tmp_path: Path) -> None:
    convs = [[{"role": "system", "content": "Label it."}, {"role": "user", "content": t}] for t in ["good", "bad"]]
    reqs = list(prepare_chat_requests(["r1", "r2"], convs, "gpt-4o-mini", max_tokens=5, temperature=0))
    assert [r.input_tokens for r in reqs] == count_chat_tokens(convs, "gpt-4o-mini")
    assert reqs[1].body == {"model": "gpt-4o-mini", "messages": convs[1], "max_tokens": 5, "temperature": 0}
    files = write_request_files(reqs, tmp_path, limits=BatchLimits(), file_stem="c")
    check_files(files)
    assert files[0].url == CHAT_COMPLETIONS_URL
    with pytest.raises(ValueError, match="max_completion_tokens"):
        prepare_chat_requests(["r1"], convs[:1], "o3", max_tokens=5)


def test_prepare_is_lazy_in_chunks_but_complete(tmp_path: Path) -> None:
    n = 70_000  # more than one preparation chunk
    ids = [str(i) for i in range(n)]
    gen = prepare_embedding_requests(ids, ["review text"] * n, EMB)
    files = write_request_files(gen, tmp_path, limits=BatchLimits(), file_stem="big")
    check_files(files)
    assert [f.n_requests for f in files] == [50_000, 20_000]
    assert sum(f.input_tokens for f in files) == 2 * n

"""The `batch-assets` command line: the local API server for any OpenAI SDK, and search."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from batch_assets.cli import main
from batch_assets_tests.local.helpers import (
    embedding_lines,
    read_lines,
    served_by_cli,
    submit,
    wait_terminal,
    write_jsonl,
)

pytestmark = pytest.mark.e2e


def test_local_api_serve_with_a_token(tmp_path: Path) -> None:
    with served_by_cli(tmp_path / "state", "s3cret") as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="s3cret", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).batches.list()
        batch = wait_terminal(client, submit(client, write_jsonl(tmp_path / "in.jsonl", embedding_lines(["a", "b"])),
                                             "/v1/embeddings").id)
        assert batch.status == "completed" and len(read_lines(client, batch.output_file_id)) == 2


def test_serving_beyond_loopback_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["local-api", "serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_search_before_any_embeddings_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "anything", "--duckdb", str(tmp_path / "missing.duckdb")]) == 1
    assert "materialize a month first" in capsys.readouterr().err

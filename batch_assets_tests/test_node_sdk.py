"""The official Node `openai` SDK drives one batch lifecycle against `batch-assets local-api serve`.

A client written elsewhere, in another language, is the best check that the local engine speaks
OpenAI's protocol and not just what the Python SDK tolerates. The SDK (pinned) is installed from the
npm registry into a git-ignored cache folder the first time; the test skips, saying why, when node or
npm is missing or the registry cannot be reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from batch_assets_tests.local.helpers import embedding_lines, served_by_cli, write_jsonl

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
NODE_OPENAI_VERSION = "6.30.1"  # the newest major that still runs on Node 20 (7.x needs Node >= 22)
CACHE = ROOT / ".cache" / f"node-openai-{NODE_OPENAI_VERSION}"
SCRIPT = Path(__file__).parent / "node" / "batch_lifecycle.cjs"


def _node_sdk() -> Path:
    """node_modules holding the pinned SDK, installed on first use (no package.json, no lock file)."""
    if shutil.which("node") is None:
        pytest.skip("node is not on this machine: the Node SDK check needs node (and npm, once)")
    modules = CACHE / "node_modules"
    installed = modules / "openai" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == NODE_OPENAI_VERSION:
        return modules
    if shutil.which("npm") is None:
        pytest.skip(f"npm is not on this machine: it installs openai@{NODE_OPENAI_VERSION} for the Node SDK check")
    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["npm", "install", "--prefix", str(CACHE), "--no-package-lock", "--no-save", "--no-audit",
                        "--no-fund", f"openai@{NODE_OPENAI_VERSION}"], check=True, capture_output=True, text=True,
                       timeout=180)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = (getattr(exc, "stderr", None) or "").strip().splitlines()[-3:]
        pytest.skip(f"could not install openai@{NODE_OPENAI_VERSION} from the npm registry: {output}")
    return modules


def test_the_node_sdk_runs_a_batch_lifecycle(tmp_path: Path) -> None:
    modules = _node_sdk()
    responses = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                  "body": {"model": "gpt-4o-mini", "input": text, "max_output_tokens": 16}}
                 for i, text in enumerate(["Say hello.", "Name a colour."])]
    env = {**os.environ, "NODE_PATH": str(modules),
           "RESPONSES_JSONL": str(write_jsonl(tmp_path / "responses.jsonl", responses)),
           "EMBEDDINGS_JSONL": str(write_jsonl(tmp_path / "many.jsonl",
                                               embedding_lines([f"text {i}" for i in range(200)])))}
    # A short item delay keeps the second batch cancellable mid-way.
    with served_by_cli(tmp_path / "state", "s3cret", {"BATCH_ASSETS_LOCAL_ITEM_DELAY_SECONDS": "0.05"}) as base_url:
        run = subprocess.run(["node", str(SCRIPT)], env={**env, "OPENAI_BASE_URL": base_url,
                                                          "OPENAI_API_KEY": "s3cret"},
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["file"]["purpose"] == "batch" and out["file"]["expires_at"] == out["file"]["created_at"] + 30 * 86400
    assert out["created"] == {"status": "validating", "endpoint": "/v1/responses", "metadata": {"client": "node"}}
    assert out["done"]["status"] == "completed" and out["done"]["counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert out["listed_files"] == out["ids"]["files"][::-1]  # newest first, two pages of one
    assert out["listed_batches"] == out["ids"]["batches"][::-1]
    for line in out["output_lines"]:
        body = line["response"]["body"]
        assert body["object"] == "response" and body["output"][0]["content"][0]["type"] == "output_text"
    assert out["cancelling"] in ("cancelling", "cancelled") and out["cancelled"] == "cancelled"
    assert out["missing_batch"]["kind"] == "NotFoundError" and out["missing_batch"]["status"] == 404
    assert "No such File object: file-missing" in out["missing_file"]["message"]
    assert (out["bad_endpoint"]["status"], out["bad_endpoint"]["code"], out["bad_endpoint"]["param"]) == \
        (400, "invalid_value", "endpoint")
    assert out["deleted"] is True

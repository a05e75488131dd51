"""What the request and result benchmarks share: the shipped pipelines as the assets load them, a month of
unique review-like items for each, and one measurement per subprocess (its own peak RSS)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from batch_assets.ledger.store import Ledger, ledger_url
from batch_assets.pipelines.catalog import PIPELINES
from batch_assets.pipelines.declared import PipelineDeclaration
from batch_assets.pipelines.spec import PipelineSpec
from batch_assets.sources import rotten_tomatoes_documents

ROOT = Path(__file__).resolve().parents[1]
MONTH = date(2024, 3, 1)
PIPELINE_NAMES = ("embeddings", "sentiment", "reports", "titles")


def open_ledger(data_dir: Path) -> Ledger:
    """The ledger a data folder holds (SQLite beside the warehouse), whatever BATCH_ASSETS_LEDGER_URL says."""
    return Ledger(ledger_url(data_dir, env={}))


def shipped_specs() -> dict[str, PipelineSpec]:
    """The Python pipelines and the YAML one (titles), as the code location builds them."""
    attributes = yaml.safe_load((ROOT / "batch_assets" / "defs" / "titles" / "defs.yaml").read_text())["attributes"]
    titles = PipelineDeclaration.model_validate(attributes).to_spec()
    return {**{spec.name: spec for spec in PIPELINES}, titles.name: titles}


def unique_texts(n: int) -> list[str]:
    """``n`` distinct review-like texts: a Rotten Tomatoes review followed by the opening of another one (pairs
    differ for up to 13,891² texts), so nothing is de-duplicated that a real month would not de-duplicate."""
    reviews = rotten_tomatoes_documents()["text"].unique(maintain_order=True).to_list()
    r = len(reviews)
    return [f"{reviews[i % r]} {reviews[(i // r * 7919 + 13) % r][:60]}" for i in range(n)]


def items_frame(pipeline: str, n: int) -> pl.DataFrame:
    """A month of the pipeline's source rows, as `warehouse.read_table` returns them."""
    if pipeline == "reports":
        rng = np.random.default_rng(7)
        return pl.DataFrame({
            "month": [MONTH] * n, "company": [f"Company {i:07d} Holdings" for i in range(n)],
            "revenue_usd": rng.uniform(1e6, 2e7, n).round(2), "revenue_growth_pct": rng.normal(1, 4, n).round(2),
            "gross_margin_pct": rng.uniform(35, 80, n).round(2), "active_customers": rng.integers(500, 90_000, n),
            "churn_pct": rng.uniform(0.2, 5, n).round(2), "support_tickets": rng.integers(10, 9_000, n),
            "nps": rng.integers(-20, 70, n)})
    return pl.DataFrame({
        "month": [MONTH] * n, "id": [f"doc-{i:07d}" for i in range(n)], "text": unique_texts(n),
        "created_at": pl.Series([None] * n, dtype=pl.Datetime("us")),
        "label": pl.Series([None] * n, dtype=pl.String)})


def rss_bytes() -> int:
    """This process's resident memory now."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident memory. On Linux from VmHWM: getrusage's ru_maxrss carries the parent's
    RSS at fork over into the child (a benchmark that seeded a big month in-process then reported that as
    every case's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True)
class Measured:
    seconds: float
    cpu_seconds: float  # user + system, every thread of the process: less sensitive to other load than seconds
    peak_rss: int  # bytes, the whole process
    base_rss: int  # bytes, before the timed code ran (interpreter, libraries and the input)
    extra: dict[str, float]

    @property
    def above_input(self) -> int:
        return self.peak_rss - self.base_rss


def report(run: Callable[[], dict[str, float] | None]) -> None:
    """In a case subprocess: run the timed code and print what it took as JSON (the last stdout line)."""
    base = rss_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    extra = run() or {}
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_rss": peak_rss_bytes(), "base_rss": base,
                      "extra": extra}))


def measure(script: Path, args: list[str]) -> Measured:
    """Runs one case of ``script`` in a fresh interpreter, so its peak RSS is its own."""
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    values = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(values["seconds"], values["cpu_seconds"], values["peak_rss"], values["base_rss"], values["extra"])


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available, Python {sys.version.split()[0]}"


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.0f} MB"

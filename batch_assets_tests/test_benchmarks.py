"""The benchmarks run: each one at a tiny size, so a change that breaks one shows here, not when someone next
measures. Nothing is timed here; the numbers are the benchmarks' own business."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

TINY = {
    "bench_collect.py": ["--chat", "300", "--embeddings", "40", "--repeats", "1"],
    "bench_results_parse.py": ["--n", "500"],
    "bench_sensor.py": ["--months", "8", "--repeats", "1"],
    "bench_instance_storage.py": ["--months", "2", "--repeats", "1"],
    "bench_request_files.py": ["--n", "3000", "--repeats", "1"],
}


@pytest.mark.parametrize("script", sorted(TINY))
def test_benchmark_runs(script: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *TINY[script]], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip(), f"{script} printed nothing"

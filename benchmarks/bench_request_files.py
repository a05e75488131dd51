"""Documents → split request files with exact token counts, against tokenizing alone (same run).

    .venv/bin/python benchmarks/bench_request_files.py [--n 200000]

Texts are the bundled Rotten Tomatoes reviews, repeated to N. Target (DESIGN.md): the whole step
within 1.5× of counting tokens alone on both cores.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from batch_assets.batching.request_files import BatchLimits, prepare_embedding_requests, write_request_files
from batch_assets.batching.tokens import count_text_tokens, default_num_threads, encoding_for_model
from batch_assets.sources import rotten_tomatoes_documents

MODEL = "text-embedding-3-small"


def timed(label: str, run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    print(f"{label:<58}{seconds:>8.2f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    reviews = rotten_tomatoes_documents()["text"].to_list()
    texts = (reviews * (n // len(reviews) + 1))[:n]
    ids = [f"doc-{i:07d}" for i in range(n)]
    threads = default_num_threads()
    print(f"{n} texts, mean {sum(map(len, texts)) / n:.0f} chars, {threads} threads")
    encoding = encoding_for_model(MODEL)
    encoding.encode_ordinary("warm up")
    one_core = timed("baseline: encode_ordinary loop, one core",
                     lambda: [len(encoding.encode_ordinary(t)) for t in texts])
    tokens_only = timed(f"count_text_tokens, {threads} threads", lambda: count_text_tokens(texts, MODEL))
    out = Path(tempfile.mkdtemp())
    try:
        files: list = []
        whole = timed("prepare + write_request_files (tokens, split, JSONL)", lambda: files.extend(
            write_request_files(prepare_embedding_requests(ids, texts, MODEL), out, limits=BatchLimits(),
                                file_stem="bench")))
        size = sum(f.n_bytes for f in files)
    finally:
        shutil.rmtree(out)
    print(f"{len(files)} files, {size / 1e6:.0f} MB")
    print(f"ratio whole step / tokenizing alone ({threads} threads): {whole / tokens_only:.2f}  (target ≤ 1.5)")
    print(f"ratio tokenizing one core / {threads} threads: {one_core / tokens_only:.2f}")


if __name__ == "__main__":
    main()

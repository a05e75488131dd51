"""Counts made in forked children are the counts made here; a child that fails is counted again here (same error),
and children of an abandoned iteration are stopped and reaped."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from batch_assets.batching import forked
from batch_assets.batching.encodings import count_text_tokens, encoding_for_model
from batch_assets.batching.forked import CountedAhead, CountedChunks

TEXTS = [f"text number {i} {'é' * (i % 7)} 🎬" for i in range(1000)]
encoding_for_model("gpt-4o-mini")  # loaded once here, as the builders do, not in every child


def _count(chunk: Sequence[str]) -> list[int]:
    return count_text_tokens(chunk, "gpt-4o-mini", num_threads=1)


def _children() -> set[int]:
    """This process's children, running or not yet reaped (Linux lists them per thread; a thread that ends while
    they are listed takes its file with it, and had no child left to list)."""
    children: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            children.update(int(pid) for pid in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return children


_before: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before() -> None:
    """What earlier tests left (a local engine worker idling, say) is not this test's to check."""
    _before.clear()
    _before.update(_children())


def _no_children_left() -> bool:
    """No child this test started is left: not running, not waiting to be reaped."""
    return _children() <= _before


@pytest.mark.parametrize("ahead", [1, 2, 5])
def test_counts_from_children_are_the_counts(ahead: int) -> None:
    chunks = CountedChunks(len(TEXTS), 128, lambda at: TEXTS[at : at + 128], _count, ahead)
    try:
        got = [(start, chunk, counts) for start, chunk, counts in chunks]
    finally:
        chunks.close()
    assert [start for start, _, _ in got] == list(range(0, len(TEXTS), 128))
    assert [n for _, _, counts in got for n in counts] == _count(TEXTS)
    assert _no_children_left() and not forked._EXITING  # children read while exiting were reaped at close


def test_a_failing_child_is_counted_again_here_with_the_same_error() -> None:
    def count(chunk: list[str]) -> list[int]:
        if "bad" in chunk:
            raise ValueError("cannot count 'bad'")
        return [len(t) for t in chunk]

    chunks = CountedChunks(4, 2, lambda at: [["a", "bb"], ["bad", "c"]][at // 2], count, 2)
    try:
        assert next(chunks) == (0, ["a", "bb"], [1, 2])
        with pytest.raises(ValueError, match="cannot count 'bad'"):
            next(chunks)
    finally:
        chunks.close()
    assert _no_children_left()


def test_a_child_is_used_for_a_list_and_a_thread_otherwise() -> None:
    with ThreadPoolExecutor(1) as threads:
        in_child = CountedAhead(_count, TEXTS[:10], threads, may_fork=True)
        in_thread = CountedAhead(_count, tuple(TEXTS[:10]), threads, may_fork=True)
        assert not in_child.in_thread and in_thread.in_thread
        assert in_child.result() == in_thread.result() == _count(TEXTS[:10])


def test_abandoned_children_are_stopped() -> None:
    def slow_after_the_first(chunk: Sequence[str]) -> list[int]:
        if chunk[0] != TEXTS[0]:
            time.sleep(30)
        return [0] * len(chunk)

    chunks = CountedChunks(30, 10, lambda at: TEXTS[at : at + 10], slow_after_the_first, 2)
    assert next(chunks)[0] == 0  # the two chunks after it are being counted
    started = time.monotonic()
    chunks.close()
    assert time.monotonic() - started < 10
    assert _no_children_left()


def test_a_hung_child_is_stopped_and_its_chunk_counted_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forked, "CHILD_TIMEOUT_SECONDS", 1.0)
    parent = os.getpid()

    def hangs_in_a_child(chunk: Sequence[str]) -> list[int]:
        if os.getpid() != parent:  # a lock held at fork time would look like this
            time.sleep(60)
        return _count(chunk)

    with ThreadPoolExecutor(1) as threads:
        counting = CountedAhead(hangs_in_a_child, TEXTS[:10], threads, may_fork=True)
        assert not counting.in_thread
        started = time.monotonic()
        assert counting.result() == _count(TEXTS[:10])
        assert time.monotonic() - started < 10
    assert _no_children_left()

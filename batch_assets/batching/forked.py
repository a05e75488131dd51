"""Token counts computed in a forked child process, beside the parent's file writing.

tiktoken releases the GIL while it encodes a text but takes it back after every one, so a counting thread in the
writer's process waits for the writer's Python (and the writer for it): threads cannot put the two on two cores.
A child forked with the chunk already in memory can: it counts with its own interpreter and sends the counts back
through a pipe as 32-bit integers; nothing is pickled, no interpreter starts, and the encoding is the parent's,
already loaded. The child runs only the count (tiktoken and plain Python: no polars, DuckDB or I/O of the
parent's) and leaves with ``os._exit``, so nothing of the parent's is flushed or closed twice.

Where fork is missing (not Linux), or fails, or the child does (or does not answer in CHILD_TIMEOUT_SECONDS), the
chunk is counted in a thread of this process instead: the counts, and any error counting raises, are the same.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, Generic, TypeVar

_Chunk = TypeVar("_Chunk", bound=Sized)
_CAN_FORK: Final = sys.platform == "linux" and hasattr(os, "fork")
# A child counts a chunk of 65,536 texts in about a second; one that has not answered by then is stopped and the
# chunk counted in this process instead, so a child that hangs (a lock held at fork time) cannot stall a run.
CHILD_TIMEOUT_SECONDS: Final = 120.0


# Children that sent their counts and were still exiting when they were read: reaped without waiting for them.
_EXITING: list[int] = []


def _reap(*, block: bool) -> None:
    for pid in list(_EXITING):
        try:
            reaped, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere
            reaped = pid
        if reaped:
            _EXITING.remove(pid)


class CountedAhead(Generic[_Chunk]):
    """``count(chunk)`` started now, its result taken later with :meth:`result`; :meth:`cancel` if never taken."""

    def __init__(self, count: Callable[[_Chunk], list[int]], chunk: _Chunk, threads: ThreadPoolExecutor, *,
                 may_fork: bool) -> None:
        self._count, self._chunk, self._n, self._threads = count, chunk, len(chunk), threads
        self._pid = 0
        self._read = -1
        self._future: Future[list[int]] | None = None
        if may_fork and _CAN_FORK and self._n and isinstance(chunk, list):
            self._fork()
        if not self._pid:
            self._future = threads.submit(count, chunk)

    def _fork(self) -> None:
        try:
            read, write = os.pipe()
        except OSError:
            return
        try:
            pid = os.fork()
        except OSError:
            os.close(read)
            os.close(write)
            return
        if pid == 0:  # the child: count, send, leave without running anything of the parent's
            status = 1
            try:
                os.close(read)
                data = memoryview(array("i", self._count(self._chunk)).tobytes())
                while data:
                    data = data[os.write(write, data):]
                os.close(write)  # the counts are sent: the parent reads on while this process is torn down
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        self._pid, self._read = pid, read

    @property
    def in_thread(self) -> bool:
        """Counted (or counting) in a thread of this process, not in a child."""
        return self._future is not None

    def result(self) -> list[int]:
        if self._future is None:
            counts = self._from_child()
            if counts is not None:
                return counts
            self._future = self._threads.submit(self._count, self._chunk)  # the child failed: count here
        return self._future.result()

    def _from_child(self) -> list[int] | None:
        parts = []
        deadline = time.monotonic() + CHILD_TIMEOUT_SECONDS
        try:
            while True:
                waiting = deadline - time.monotonic()
                if waiting <= 0 or not select.select([self._read], [], [], waiting)[0]:
                    os.kill(self._pid, signal.SIGKILL)  # hung (it should take about a second): count here
                    os.waitpid(self._pid, 0)
                    return None
                part = os.read(self._read, 1 << 20)
                if not part:
                    break
                parts.append(part)
            # A child that sent its counts is still being torn down (~30 ms for a big parent): reaped later.
            reaped, status = os.waitpid(self._pid, os.WNOHANG)
            if not reaped:
                _EXITING.append(self._pid)
                status = 0
        except BaseException:  # interrupted while reading: the child is not left behind
            os.kill(self._pid, signal.SIGKILL)
            os.waitpid(self._pid, 0)
            raise
        finally:
            os.close(self._read)
            self._pid = 0
        _reap(block=False)
        data = b"".join(parts)
        counts = array("i")
        # The child sends every count or none that counts: all the bytes mean all the counts.
        if status != 0 or len(data) != counts.itemsize * self._n:
            return None
        counts.frombytes(data)
        return counts.tolist()

    def cancel(self) -> None:
        """Stops a child whose counts will not be read (the caller stopped early)."""
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(self._read)
            os.waitpid(self._pid, 0)
            self._pid = 0
        elif self._future is not None:
            self._future.cancel()


class CountedChunks(Generic[_Chunk]):
    """The ``n_items`` in chunks (start, chunk, token counts), up to ``ahead`` chunks counted ahead of the one the
    caller is writing, each in its own child process (a chunk that is not a list, or any chunk once one was
    counted in this process, in a thread: a child must not be forked while a thread of ours is counting).
    :meth:`close` when done or abandoned: children still counting are stopped."""

    def __init__(self, n_items: int, chunk_size: int, chunk_at: Callable[[int], _Chunk],
                 count: Callable[[_Chunk], list[int]], ahead: int) -> None:
        self._starts = iter(range(0, n_items, chunk_size))
        self._chunk_at, self._count, self._ahead = chunk_at, count, max(1, ahead)
        self._pending: deque[tuple[int, _Chunk, CountedAhead[_Chunk]]] = deque()
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="count-ahead")
        self._may_fork = True

    def __iter__(self) -> CountedChunks[_Chunk]:
        return self

    def __next__(self) -> tuple[int, _Chunk, list[int]]:
        while len(self._pending) <= self._ahead:
            start = next(self._starts, None)
            if start is None:
                break
            chunk = self._chunk_at(start)
            counting = CountedAhead(self._count, chunk, self._threads, may_fork=self._may_fork)
            self._may_fork = self._may_fork and not counting.in_thread
            self._pending.append((start, chunk, counting))
        if not self._pending:
            raise StopIteration
        start, chunk, counting = self._pending.popleft()
        counts = counting.result()
        self._may_fork = self._may_fork and not counting.in_thread
        return start, chunk, counts

    def close(self) -> None:
        for _, _, counting in self._pending:
            counting.cancel()
        self._pending.clear()
        self._threads.shutdown(wait=True, cancel_futures=True)
        _reap(block=True)

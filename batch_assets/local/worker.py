"""The batch worker: a detached process that validates, executes and finalizes batches.

One worker per state folder at a time (an exclusive file lock), so a batch is never executed twice.
It runs every unfinished batch side by side (:class:`batch_assets.local.runner.BatchRunner`) and
commits each finished item at once, so a crashed worker's successor resumes where it stopped. The
worker exits after a quiet spell; any API call that finds unfinished batches and no worker starts a
new one.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from batch_assets.local.runner import BatchRunner
from batch_assets.local.store import StateStore

log = logging.getLogger("batch_assets.local.worker")


# -- the worker process ------------------------------------------------------------------------------------
def _lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / "worker.lock"


def _try_lock(state_dir: Path) -> int | None:
    fd = os.open(_lock_path(state_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def worker_is_running(state_dir: Path) -> bool:
    fd = _try_lock(state_dir)
    if fd is None:
        return True
    os.close(fd)  # closing releases the lock
    return False


def ensure_worker(state_dir: Path, idle_seconds: float) -> None:
    """Starts a detached worker unless one holds the lock. Cheap: one flock attempt.

    The lock is taken here and handed to the new worker, so the calls made while it starts up (a
    second or two of imports) do not each start another one.
    """
    state_dir = Path(state_dir)
    fd = _try_lock(state_dir)
    if fd is None:
        return
    try:
        with (state_dir / "worker.log").open("ab") as log_file:
            subprocess.Popen(
                [sys.executable, "-m", "batch_assets.local.worker", str(state_dir.resolve()), "--idle-seconds",
                 str(idle_seconds), "--lock-fd", str(fd)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, pass_fds=(fd,),
            )
    finally:
        os.close(fd)  # the worker's copy of the descriptor keeps the lock


def serve_forever(state_dir: Path, idle_seconds: float, lock_fd: int | None = None) -> bool:
    """Runs batches until none arrive for idle_seconds. Returns False at once if another worker runs.
    ``lock_fd``: the state folder's lock, already taken by the process that started this one."""
    fd = lock_fd if lock_fd is not None else _try_lock(state_dir)
    if fd is None:
        return False
    (Path(state_dir) / "worker.pid").write_text(str(os.getpid()))
    store = StateStore(state_dir)
    runner = BatchRunner(store)
    idle_since = time.monotonic()
    while True:
        if runner.step():
            idle_since = time.monotonic()
            continue
        if time.monotonic() - idle_since < idle_seconds:
            time.sleep(0.2)
            continue
        # Release, then look once more: a batch created while we held the lock would otherwise wait
        # for the next API call to start a worker.
        os.close(fd)
        if not store.has_active_batches():
            runner.close()
            return True
        fd = _try_lock(state_dir)
        if fd is None:
            runner.close()
            return True
        idle_since = time.monotonic()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Batch API worker (started automatically).")
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--lock-fd", type=int, default=None, help="the state folder's lock, taken by the starter")
    args = parser.parse_args(argv)
    # Each embeddings thread tokenizes its own small chunk: the tokenizer's own thread pool would only take
    # the cores from the model runs.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{os.getpid()}] %(message)s")
    log.info("started")
    if serve_forever(args.state_dir, args.idle_seconds, args.lock_fd):
        log.info("idle, exiting")
    else:
        log.info("another worker holds the lock, exiting")


if __name__ == "__main__":
    main()

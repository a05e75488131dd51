"""`batch-assets batches status` and `batch-assets batches cancel`: a month's batches from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import date

from batch_assets.batching.client import BatchClient
from batch_assets.ledger.records import LedgerError
from batch_assets.ledger.store import Ledger
from batch_assets.pipelines.control import cancel_month, month_lines
from batch_assets.provider import make_batch_client
from batch_assets.settings import PlatformSettings
from batch_assets.sources import month_start


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batches = commands.add_parser("batches", help="see or cancel a month's batches")
    sub = batches.add_subparsers(dest="batches_command", required=True)
    status = sub.add_parser("status", help="live batches per pipeline-month with their progress")
    status.add_argument("--pipeline", default=None)
    status.add_argument("--month", default=None, help="e.g. 2024-03")
    status.add_argument("--all", action="store_true", help="also months with nothing running")
    status.set_defaults(run=_status)
    cancel = sub.add_parser("cancel", help="cancel a month's batches (finished items are kept; nothing is retried)")
    cancel.add_argument("--pipeline", required=True)
    cancel.add_argument("--month", required=True, help="e.g. 2024-03")
    cancel.set_defaults(run=_cancel)


def batch_client(settings: PlatformSettings) -> BatchClient:
    """The client Dagster's runs use: the local engine on the data folder's state, or the provider."""
    if settings.provider != "local":
        return make_batch_client(settings.provider)
    from batch_assets.local.config import EngineConfig
    from batch_assets.local.transport import local_openai_client

    config = dataclasses.replace(EngineConfig.from_env(), state_dir=settings.local_state_dir)
    return BatchClient(local_openai_client(config))


def _month(text: str | None) -> date | None:
    return month_start(text) if text else None


def _status(args: argparse.Namespace) -> int:
    settings = PlatformSettings.from_env()
    with Ledger(settings.ledger_url) as ledger:
        lines = month_lines(ledger, pipeline=args.pipeline, month=_month(args.month), live_only=not args.all)
    if not lines:
        print("no batches running" + ("" if args.all else " (--all lists every month submitted)"))
        return 0
    for line in lines:
        record = line.month
        items = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in line.items_by_state.items())
        print(f"{record.pipeline} {record.month[:7]}  {record.state.value.replace('_', ' ')}  attempt {record.attempt}"
              f"  {line.completed + line.failed}/{line.total} requests ended ({line.failed} failed)"
              + (f"; items: {items}" if items else ""))
        for f in line.files:
            print(f"    {f.batch_id or '-':<36} {f.state.value:<10} {f.batch_status or '':<11} "
                  f"{f.completed + f.failed}/{f.total}  {f.model}")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    settings = PlatformSettings.from_env()
    month = _month(args.month)
    assert month is not None
    with Ledger(settings.ledger_url) as ledger:
        try:
            outcome = cancel_month(batch_client(settings), ledger, args.pipeline, month)
        except (ValueError, LedgerError) as exc:
            print(f"batch-assets batches cancel: {exc}", file=sys.stderr)
            return 1
    print(outcome.describe())
    return 0

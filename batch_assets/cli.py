"""The `batch-assets` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _serve(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from batch_assets.local.config import EngineConfig
    from batch_assets.local.server import serve

    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        print("Refusing to serve beyond loopback without --token: anyone reaching the port could run jobs.",
              file=sys.stderr)
        return 2
    config = EngineConfig.from_env()  # the state folder Dagster uses, unless --state-dir says otherwise
    if args.state_dir:
        config = dataclasses.replace(config, state_dir=Path(args.state_dir).resolve())
    print(f"Local Batch API on http://{args.host}:{args.port}/v1 (state in {config.state_dir})", flush=True)
    serve(args.host, args.port, token=args.token, config=config)
    return 0


def _search(args: argparse.Namespace) -> int:
    from batch_assets.search import run_search

    return run_search(args.text, month=args.month, k=args.k, duckdb_path=args.duckdb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batch-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local_api = commands.add_parser("local-api", help="the local OpenAI-compatible Batch API")
    local_commands = local_api.add_subparsers(dest="local_command", required=True)
    serve = local_commands.add_parser("serve", help="serve it over HTTP for any OpenAI SDK")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=8001)
    serve.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every request")
    serve.add_argument("--state-dir", default=None, help="state folder (default: the one Dagster uses: "
                       "BATCH_ASSETS_LOCAL_STATE_DIR, else <BATCH_ASSETS_DATA_DIR>/local_api, else "
                       ".batch_assets/local_api)")
    serve.set_defaults(run=_serve)

    search = commands.add_parser("search", help="nearest documents to a text, from document_embeddings")
    search.add_argument("text")
    search.add_argument("--month", default=None, help="only this month, e.g. 2024-03")
    search.add_argument("-k", type=int, default=5, help="how many documents (default 5)")
    search.add_argument("--duckdb", default=None, help="warehouse path (default: BATCH_ASSETS_DUCKDB_PATH)")
    search.set_defaults(run=_search)

    from batch_assets.batches_cli import add_commands
    from batch_assets.costs_cli import add_command

    add_commands(commands)
    add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

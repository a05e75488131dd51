#!/usr/bin/env bash
# Set up (first run) and run the whole test suite offline: lint, type check, definitions check, unit and e2e tests.
# Extra arguments go to pytest (e.g. -m "not e2e" for the fast unit tests only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
.venv/bin/ruff check batch_assets batch_assets_tests benchmarks
.venv/bin/mypy  # batch_assets/, with the settings of [tool.mypy] in pyproject.toml
# `dg check defs`: the defs folder's YAML against its components' schemas, then the code location loads as `dg dev`
# loads it. A throwaway DAGSTER_HOME (telemetry off) leaves nothing behind; VIRTUAL_ENV tells dg which
# environment is the project's.
dagster_home="$(mktemp -d)"
printf 'telemetry:\n  enabled: false\n' > "$dagster_home/dagster.yaml"
check_log="$(mktemp)"
if ! DAGSTER_HOME="$dagster_home" VIRTUAL_ENV="$root/.venv" .venv/bin/dg check defs >"$check_log" 2>&1; then
    cat "$check_log" >&2
    echo "dg check defs failed" >&2
    exit 1
fi
grep -h "validated successfully\|loaded successfully" "$check_log"
rm -rf "$dagster_home" "$check_log"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Set up (first run) and run the whole test suite offline: lint, definitions check, unit and e2e tests.
# Extra arguments go to pytest (e.g. -m "not e2e" for the fast unit tests only).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
.venv/bin/ruff check batch_assets batch_assets_tests benchmarks
# The code location must load the way `dagster dev` loads it (throwaway DAGSTER_HOME, nothing left behind).
validate_log="$(mktemp)"
if ! DAGSTER_HOME="$(mktemp -d)" .venv/bin/dagster definitions validate -w workspace.yaml >"$validate_log" 2>&1; then
    cat "$validate_log" >&2
    echo "dagster definitions validate failed" >&2
    exit 1
fi
grep -h "passed validation" "$validate_log"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Set up (first run) and run the whole test suite offline: lint, definitions check, unit and e2e tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
.venv/bin/ruff check batch_assets batch_assets_tests benchmarks
exec .venv/bin/python -m pytest "$@"

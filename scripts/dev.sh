#!/usr/bin/env bash
# Set up (first run) and start Dagster's webserver + daemon with the project on the local engine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
mkdir -p .dagster_home
export DAGSTER_HOME="$root/.dagster_home"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/dagster dev -w workspace.yaml "$@"

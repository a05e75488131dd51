#!/usr/bin/env bash
# Set up (first run) and start Dagster's webserver + daemon with the project on the local engine.
# Extra arguments go to `dg dev` (e.g. -p 3001).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The project folder is DAGSTER_HOME, so its dagster.yaml is the one in effect; state goes to .dagster_home/.
export DAGSTER_HOME="$root"
exec .venv/bin/dg dev -w workspace.yaml "$@"

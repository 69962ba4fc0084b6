#!/usr/bin/env bash
# Set up, then run every check CI runs: format, lint, types, import boundaries, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff format";  ruff format --check .
echo "== ruff check";   ruff check .
echo "== mypy";         mypy
echo "== import-linter"; lint-imports
echo "== pytest";       pytest -q -p no:cacheprovider "$@"

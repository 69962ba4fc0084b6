#!/usr/bin/env bash
# Set up, then run every check CI runs: format, lint, types, import boundaries, tests.
# The tests get a throwaway PostgreSQL cluster on loopback (scripts/postgres.sh), stopped
# on exit; without one its tests are skipped, except in CI (CI=true), where they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff format";  ruff format --check .
echo "== ruff check";   ruff check .
echo "== mypy";         mypy
echo "== import-linter"; lint-imports
echo "== postgres"
if [ -n "${ACTORBOT_TEST_PG_DSN:-}" ]; then
    echo "using the cluster in ACTORBOT_TEST_PG_DSN"
elif pg_env=$(bash scripts/postgres.sh start); then
    while IFS= read -r assignment; do export "${assignment?}"; done <<<"$pg_env"
    trap 'bash scripts/postgres.sh stop "$ACTORBOT_TEST_PG_DIR"' EXIT
    trap 'exit 130' INT TERM  # through the EXIT trap: the cluster is stopped
    echo "started a throwaway cluster in $ACTORBOT_TEST_PG_DIR"
elif [ "${CI:-}" = true ]; then
    echo "check: CI needs PostgreSQL and it could not be started" >&2
    exit 1
else
    echo "check: PostgreSQL could not be started; its tests will be skipped" >&2
fi
echo "== pytest";       pytest -q -p no:cacheprovider "$@"

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
echo "== chromium"
# The web page's browser test drives Debian's chromium (Playwright cannot download one here).
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium from Debian's packages…"
        (apt-get install -y -q chromium >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
            || echo "check: could not install chromium; the browser test will be skipped" >&2
    else
        echo "check: no chromium; the browser test will be skipped (apt-get install chromium)" >&2
    fi
fi
echo "== pytest";       pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The test command of the README: installs the project with its test
# dependencies into .venv, then runs the whole suite on SQLite and again on
# PostgreSQL (with Redis as channel layer and Celery broker).
#
# Without PostgreSQL or Redis on 127.0.0.1 the second pass is skipped with a
# message saying so; with CI=true it is a failure instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL=${TEST_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/test}
REDIS=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0}

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"

# The browser test (tests/test_browser_converse.py): Debian's Chromium, driven by
# Playwright (never `playwright install`), and Converse.js from npm into tests/browser/.
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
# The STUN tests (tests/test_stun.py): Debian's RFC 3489 client `stun` (stun-client).
if ! command -v stun >/dev/null; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stun-client
fi
if [ ! -d tests/browser/node_modules/converse.js ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
fi

echo "== test suite on SQLite, in-memory channel layer, eager Celery"
.venv/bin/python -m pytest "$@"

services_up() {
    .venv/bin/python - "$PG_URL" "$REDIS" <<'PY'
import sys
import psycopg
import redis
try:
    psycopg.connect(sys.argv[1], connect_timeout=3).close()
    redis.Redis.from_url(sys.argv[2], socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"unreachable: {exc}")
    sys.exit(1)
PY
}

if ! services_up; then
    if [ "${CI:-}" = "true" ]; then
        echo "CI needs PostgreSQL ($PG_URL) and Redis ($REDIS); they are unreachable" >&2
        exit 1
    fi
    echo "== SKIPPED: the PostgreSQL + Redis pass (services unreachable on this machine)"
    exit 0
fi
echo "== test suite on PostgreSQL and Redis"
DATABASE_URL=$PG_URL REDIS_URL=$REDIS .venv/bin/python -m pytest "$@"

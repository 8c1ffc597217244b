#!/usr/bin/env bash
# API conformance: schemathesis (from PyPI, in a virtual environment under target/) drives
# a fresh server through the OpenAPI document it serves, with every check (schemathesis'
# default: all of them) and every phase (stateful included), and fails on anything it finds. What is excluded on purpose is in
# scripts/schemathesis.toml, each with its reason.
#
# Usage: scripts/fuzz-api.sh [EXAMPLES_PER_OPERATION]
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES=${1:-50}
SERVICE_TOKEN=schemathesis-internal-service-token
PORT=${FUZZ_API_PORT:-18098}
VENV=target/schemathesis-venv
SCHEMATHESIS_VERSION=4.32.5

if [[ ! -x $VENV/bin/schemathesis ]] || ! "$VENV/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet -p account-server
WORK=$(mktemp -d)
DATABASE_URL="sqlite://$WORK/fuzz.db" BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn LOG_FORMAT=json \
    RATE_LIMIT_SIGNUPS_PER_HOUR=0 RATE_LIMIT_AUTH_FAILURES_PER_MINUTE=0 RATE_LIMIT_LEAK_REPORTS_PER_HOUR=0 \
    RATE_LIMIT_WRITES_PER_MINUTE=0 MAX_ACTIVE_KEYS_PER_ORG=100000 \
    INTERNAL_SERVICE_TOKEN="$SERVICE_TOKEN" \
    WEBHOOK_SECRET_KEY=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= WEBHOOK_ALLOW_PRIVATE_TARGETS=1 \
    target/debug/account-api >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

export SCHEMATHESIS_SERVICE_TOKEN=$SERVICE_TOKEN
SCHEMATHESIS_API_KEY=$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/signup" -H 'content-type: application/json' \
    -d '{"name": "Schemathesis", "email": "schemathesis@fuzz.test"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["data"]["api_key"]["key"])')
export SCHEMATHESIS_API_KEY

status=0
"$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
    --max-examples "$EXAMPLES" \
    --seed 20261126 \
    --generation-database none \
    --request-timeout 10 \
    --no-color || status=$?
if grep -q '"level":"ERROR"' "$WORK/server.log"; then
    echo "the server logged errors during the run:" >&2
    grep '"level":"ERROR"' "$WORK/server.log" | head -20 >&2
fi
exit $status

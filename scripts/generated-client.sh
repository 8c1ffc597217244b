#!/usr/bin/env bash
# A client generated from docs/openapi.json (openapi-python-client, from PyPI, in a virtual
# environment under target/) drives every operation of a fresh server:
# scripts/generated_client.py. What a user's generator makes of the document works.
#
# Usage: scripts/generated-client.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICE_TOKEN=generated-client-internal-service-token
PORT=${GENERATED_CLIENT_PORT:-18099}
VENV=target/generated-client-venv
GENERATOR_VERSION=0.29.1

if [[ ! -x $VENV/bin/openapi-python-client ]] || ! "$VENV/bin/openapi-python-client" --version | grep -q "$GENERATOR_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "openapi-python-client==$GENERATOR_VERSION"
fi

cargo build --quiet -p account-server
WORK=$(mktemp -d)
(cd "$WORK" && "$OLDPWD/$VENV/bin/openapi-python-client" generate --path "$OLDPWD/docs/openapi.json" \
    --meta none --output-path account_api_client >generate.log 2>&1) || { cat "$WORK/generate.log" >&2; exit 1; }
DATABASE_URL="sqlite://$WORK/client.db" BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn \
    INTERNAL_SERVICE_TOKEN="$SERVICE_TOKEN" \
    WEBHOOK_SECRET_KEY=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= WEBHOOK_ALLOW_PRIVATE_TARGETS=1 \
    target/debug/account-api >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

PYTHONPATH="$WORK" "$VENV/bin/python" scripts/generated_client.py "http://127.0.0.1:$PORT" "$SERVICE_TOKEN" docs/openapi.json

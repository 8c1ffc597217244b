#!/usr/bin/env bash
# Webhook load of a release server (docs/performance.md, *Webhooks*): how many events a
# second the delivery worker delivers to a fast local receiver (an outbox of EVENTS events
# over ENDPOINTS endpoints, written before the server starts, delivered from its start),
# and what the outbox costs key creation (POST /v1/account/api-keys with one endpoint
# subscribed to key.created against none, alternated over ROUNDS rounds, median).
#
# Usage: scripts/webhook-load.sh [sqlite|postgres|both]   (env: EVENTS, ENDPOINTS, ROUNDS,
# SECONDS_PER_RUN, CONNECTIONS, PG_ADMIN_URL, BENCH_BIN: a release binary to measure instead)
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${1:-both}
EVENTS=${EVENTS:-5000}
ENDPOINTS=${ENDPOINTS:-10}
ROUNDS=${ROUNDS:-5}
SECS=${SECONDS_PER_RUN:-3}
CONNS=${CONNECTIONS:-16}
PORT=${BENCH_PORT:-18199}
RECEIVER_PORT=${RECEIVER_PORT:-18198}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SERVER_CPU=0
LOAD_CPU=1
OUT=target/bench
SECRET_KEY="BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
mkdir -p "$OUT"

source scripts/bench-lib.sh
ensure_wrk
BIN=$(release_binary)
SERVER_LOG=webhook-server.log
BASE="http://127.0.0.1:$PORT"
WORK=$(mktemp -d)
PID_FILE="$WORK/server.pid"
trap 'kill "$(cat "$PID_FILE" 2>/dev/null)" 2>/dev/null || true; kill "${RECEIVER_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The receiver: answers every POST 204 at once (keep-alive), counts them, and tells the count
# with the first and last arrival times (monotonic seconds) to GET /count; GET /reset
# starts counting afresh.
cat > "$WORK/receiver.py" <<'PY'
import asyncio, json, sys, time
state = {"count": 0, "first": None, "last": None}
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            if head.startswith(b"GET /reset"):
                state.update(count=0, first=None, last=None)
            if head.startswith(b"GET"):
                body = json.dumps(state).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            else:
                now = time.monotonic()
                state["count"] += 1
                state["first"] = state["first"] or now
                state["last"] = now
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
taskset -c $LOAD_CPU python3 "$WORK/receiver.py" "$RECEIVER_PORT" &
RECEIVER_PID=$!
RECEIVER="http://127.0.0.1:$RECEIVER_PORT"

cat > "$WORK/create_key.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.body = '{"name": "bench", "scopes": ["read"]}'
LUA

# The server of bench-lib.sh with webhooks on, allowed to send to the receiver on loopback.
start_webhook_server() { start_server "$1" WEBHOOK_SECRET_KEY="$SECRET_KEY" WEBHOOK_ALLOW_PRIVATE_TARGETS=1; }

register() {
    local key=$1 events=$2
    curl -sf -X POST "$BASE/v1/account/webhooks" -H 'content-type: application/json' -H "Authorization: Bearer $key" \
        -d "{\"url\": \"$RECEIVER/hook\", \"events\": $events}" >/dev/null
}

received() { curl -sf "$RECEIVER/count" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])'; }

# wrk POST /v1/account/api-keys with KEY -> requests/s
create_keys() {
    local text
    text=$(BENCH_KEY=$1 taskset -c $LOAD_CPU wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$WORK/create_key.lua" "$BASE/v1/account/api-keys")
    if grep -q "Non-2xx" <<<"$text"; then echo "error: non-2xx answers: $(grep Non-2xx <<<"$text")" >&2; exit 1; fi
    awk '/^Requests\/sec:/ {print $2}' <<<"$text"
}


sql() {
    local url=$1 statement=$2
    if [[ $url == sqlite://* ]]; then sqlite3 "${url#sqlite://}" "$statement"; else psql "$url" -qAtc "$statement"; fi
}

run_backend() {
    local backend=$1 url db_name=""
    if [[ $backend == sqlite ]]; then
        url="sqlite://$WORK/hooks.db"
    else
        db_name="hooks_$(date +%s)_$RANDOM"
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $db_name" >/dev/null
        url="${PG_ADMIN_URL%/*}/$db_name"
    fi
    start_webhook_server "$url"

    # 1. The outbox's cost on key creation: an organization without endpoints against one
    # with an endpoint subscribed to key.created (each creation also writes its delivery,
    # which the worker sends meanwhile, on the same core).
    local bare hooked; bare=$(signup_key); hooked=$(signup_key)
    register "$hooked" '["key.created"]'
    local without=() with=() ratios=()
    for round in $(seq 1 "$ROUNDS"); do
        local a b
        if (( round % 2 )); then a=$(create_keys "$bare"); b=$(create_keys "$hooked"); else b=$(create_keys "$hooked"); a=$(create_keys "$bare"); fi
        without+=("$a"); with+=("$b"); ratios+=("$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b/a}')")
        echo "  $backend round $round: create_key without endpoints $a/s, with one $b/s, ratio ${ratios[-1]}" >&2
    done
    local w_med h_med r_med
    w_med=$(printf '%s\n' "${without[@]}" | median); h_med=$(printf '%s\n' "${with[@]}" | median)
    r_med=$(printf '%s\n' "${ratios[@]}" | median)
    # Wait for the key.created deliveries to drain before the next part counts.
    local before=-1 now; now=$(received)
    while [[ $now != "$before" ]]; do before=$now; sleep 2; now=$(received); done

    # 2. Delivery throughput: EVENTS events over ENDPOINTS endpoints of one organization,
    # written to the outbox while the server is stopped, delivered from its start.
    local org_key org_id; org_key=$(signup_key)
    org_id=$(curl -sf "$BASE/v1/account" -H "Authorization: Bearer $org_key" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["org_id"])')
    for _ in $(seq 1 "$ENDPOINTS"); do register "$org_key" '["key.renamed"]'; done
    stop_server
    local per=$(( EVENTS / ENDPOINTS ))
    sql "$url" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $per)
        INSERT INTO webhook_deliveries (endpoint_id, org_id, message_id, event_type, body, created_at, next_attempt_at)
        SELECT e.id, e.org_id, 'msg_load' || e.id || '_' || n.i, 'key.renamed',
               '{\"id\":\"msg_load\",\"type\":\"key.renamed\",\"data\":{\"key_id\":\"key_x\"}}', 0, 0
        FROM n CROSS JOIN webhook_endpoints e WHERE e.org_id = '$org_id'" >/dev/null
    curl -sf "$RECEIVER/reset" >/dev/null
    local total=$(( per * ENDPOINTS )) started=$SECONDS
    start_webhook_server "$url"
    while (( $(received) < total )); do
        if (( SECONDS - started > 600 )); then echo "not delivered within 10 min" >&2; exit 1; fi
        sleep 0.5
    done
    # From the first delivery to the last.
    local rate
    rate=$(curl -sf "$RECEIVER/count" | python3 -c "
import json, sys
s = json.load(sys.stdin)
print(round(s['count'] / (s['last'] - s['first']), 1))")
    stop_server
    [[ -n $db_name ]] && psql "$PG_ADMIN_URL" -qc "DROP DATABASE $db_name WITH (FORCE)" >/dev/null
    cat <<ROWS
| $backend | POST /v1/account/api-keys, no endpoint (median of $ROUNDS) | $w_med/s |
| $backend | POST /v1/account/api-keys, one endpoint subscribed to key.created (median of $ROUNDS) | $h_med/s |
| $backend | **with / without (median of the rounds' ratios)** | **$r_med** |
| $backend | **events delivered per second** ($total events over $ENDPOINTS endpoints, first delivery to last) | **$rate** |
ROWS
}

{
    echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo); server on CPU $SERVER_CPU, wrk and the receiver on CPU $LOAD_CPU; wrk -t1 -c$CONNS -d${SECS}s; $(date -u +%F); commit $(git rev-parse --short HEAD)"
    echo
    echo "| backend | what | figure |"
    echo "|---|---|---|"
    case $BACKENDS in
        sqlite|postgres) run_backend "$BACKENDS" ;;
        both) run_backend sqlite; run_backend postgres ;;
        *) echo "usage: $0 [sqlite|postgres|both]" >&2; exit 2 ;;
    esac
} | tee "$OUT/webhook-results.md"

#!/usr/bin/env bash
# Instructions per request of GET /healthz, of an authenticated GET /v1/account (cached
# key) and of a verification by POST /v1/internal/verify-key (the same key, its organization
# on the free plan, a `block` plan, under its quota), counted by valgrind's callgrind:
# repeatable whatever else the machine is doing, unlike the load harness. The server runs as scripts/bench.sh runs it, pinned to one core
# (so one worker); a keep-alive client sends N requests of each route after a warm-up and
# the worker thread's count between two dumps is divided by N.
#
# Usage: scripts/instructions.sh [BINARY]   (default: this tree's release build; env: REQUESTS, default 10000;
# KEEP=DIR keeps callgrind's files there, for callgrind_annotate)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get install -y valgrind >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y valgrind >/dev/null; }; }
if [[ -n ${1:-} ]]; then BIN=$1; else cargo build --release --quiet; BIN=target/release/account-api; fi
N=${REQUESTS:-10000}
PORT=${INSTRUCTIONS_PORT:-18097}
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
VPID=
trap 'kill "$VPID" 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$OUT"' EXIT
# The free plan blocks past what it includes: include enough that every verification
# measured is under the quota (and so takes the whole quota check).
DATABASE_URL="sqlite://$OUT/bench.db" RUST_LOG=warn "$BIN" plans set-included free 1000000000 >/dev/null
env INTERNAL_SERVICE_TOKEN=instructions-internal-token RATE_LIMIT_SIGNUPS_PER_HOUR=0 RATE_LIMIT_WRITES_PER_MINUTE=0 DATABASE_URL="sqlite://$OUT/bench.db" \
    BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn LOG_FORMAT=json \
    taskset -c 0 valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out.%p" "$BIN" \
    >"$OUT/server.log" 2>&1 &
VPID=$!
for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.5; done
python3 - "$PORT" "$VPID" "$N" <<'PY'
import http.client, json, random, subprocess, sys
port, pid, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)
def get(path, headers):
    conn.request("GET", path, None, headers)
    response = conn.getresponse(); response.read()
    assert response.status == 200, response.status
conn.request("POST", "/v1/signup", json.dumps({"name": "Bench", "email": f"b{random.randrange(10**9)}@bench.test"}),
             {"content-type": "application/json"})
key = json.loads(conn.getresponse().read())["data"]["api_key"]["key"]
auth = {"Authorization": f"Bearer {key}"}
verification = json.dumps({"key": key})
def verify():
    conn.request("POST", "/v1/internal/verify-key", verification,
                 {"Authorization": "Bearer instructions-internal-token", "content-type": "application/json"})
    response = conn.getresponse(); answer = json.loads(response.read())["data"]
    assert response.status == 200 and answer["code"] == "valid", answer
for _ in range(200):
    get("/healthz", {}); get("/v1/account", auth); verify()
dump = lambda *a: subprocess.run(["callgrind_control", *a, pid], check=True, capture_output=True)
dump("-z")
for _ in range(n): get("/healthz", {})
dump("-d", "healthz")
for _ in range(n): get("/v1/account", auth)
dump("-d", "account")
for _ in range(n): verify()
dump("-d", "verify")
PY
kill -TERM "$VPID"; wait "$VPID" || true
worker() { grep -l "Trigger: dump $1\$" "$OUT"/cg.out.* | xargs grep -h '^summary' | cut -d' ' -f2 | sort -n | tail -1; }
h=$(( $(worker healthz) / N )); a=$(( $(worker account) / N )); v=$(( $(worker verify) / N ))
echo "instructions per request (worker thread): GET /healthz $h, GET /v1/account $a, difference $((a - h)), ratio $(python3 -c "print(round($h/$a, 4))"); POST /v1/internal/verify-key $v"

#!/usr/bin/env bash
# Load benchmark of a release server: authenticated GET /v1/account against GET /healthz
# (alternated over several short rounds, median ratio), the cache-miss path, key creation
# and signup, on SQLite and on PostgreSQL. The server is pinned to one core and wrk to
# another, so that the load generator does not hide the server's own cost.
#
# Usage: scripts/bench.sh [sqlite|postgres|both]   (env: ROUNDS, SECONDS_PER_RUN, CONNECTIONS, PG_ADMIN_URL,
# BENCH_BIN: a release binary to measure instead of this tree's, e.g. an earlier commit's for a before/after;
# PARTS: which of hot,cold,rest to run, default all; BENCH_SEED_KEYS: keys put in the database first, by
# scripts/seed-keys.sh, e.g. 1000000 for the hot path with a million keys stored)
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${1:-both}
ROUNDS=${ROUNDS:-15}
SECS=${SECONDS_PER_RUN:-2}
CONNS=${CONNECTIONS:-32}
PARTS=${PARTS:-hot,cold,rest}
PORT=${BENCH_PORT:-18099}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SERVER_CPU=0
LOAD_CPU=1
OUT=target/bench
mkdir -p "$OUT"

source scripts/bench-lib.sh
ensure_wrk
BIN=$(release_binary)
BASE="http://127.0.0.1:$PORT"
LUA=$(mktemp -d)
trap 'rm -rf "$LUA"; [[ -n "${SERVER_PID:-}" ]] && kill "$SERVER_PID" 2>/dev/null || true' EXIT

cat > "$LUA/create_key.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.body = '{"name": "bench", "scopes": ["read"]}'
LUA
cat > "$LUA/signup.lua" <<'LUA'
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"name": "Bench", "email": "b%d-%d@bench.test"}', math.random(1, 1e9), n)
  return wrk.format("POST", "/v1/signup", {["Content-Type"] = "application/json"}, body)
end
LUA
cat > "$LUA/many_keys.lua" <<'LUA'
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS_FILE")) do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", "/v1/account", {["Authorization"] = "Bearer " .. keys[i]})
end
LUA

# wrk TARGET [args...] -> "rps p99_ms"
load() {
    local url=$1; shift
    local text
    text=$(taskset -c $LOAD_CPU wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" "$url")
    local rps p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$text")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' <<<"$text")
    # A refusal is cheaper than the work: a run with any is no measurement.
    if grep -q "Non-2xx" <<<"$text"; then echo "error: non-2xx answers during $url: $(grep Non-2xx <<<"$text")" >&2; exit 1; fi
    echo "$rps $p99"
}

# 95% bootstrap interval of the median of the numbers on stdin: how far the median could
# move on a rerun of the same machine.
median_interval() {
    python3 -c '
import random, statistics, sys
values = [float(v) for v in sys.stdin.read().split()]
random.seed(7)
medians = sorted(statistics.median(random.choices(values, k=len(values))) for _ in range(4000))
print(f"{medians[100]:.3f}–{medians[3899]:.3f}")'
}

# paired_rounds BACKEND LABEL KEY: GET /healthz and an authenticated GET /v1/account back to
# back in each of ROUNDS rounds; prints the table rows (medians, and the ratio's interval).
paired_rounds() {
    local backend=$1 label=$2 key=$3
    local ratios=() p99_ratios=() health=() account=() hp99=() ap99=()
    for round in $(seq 1 "$ROUNDS"); do
        # The VM's speed drifts: measure the two back to back, and swap which goes first
        # every round so that neither always gets the fresher moment.
        if (( round % 2 )); then
            read -r h_rps h_p99 < <(load "$BASE/healthz")
            read -r a_rps a_p99 < <(load "$BASE/v1/account" -H "Authorization: Bearer $key")
        else
            read -r a_rps a_p99 < <(load "$BASE/v1/account" -H "Authorization: Bearer $key")
            read -r h_rps h_p99 < <(load "$BASE/healthz")
        fi
        health+=("$h_rps"); account+=("$a_rps"); hp99+=("$h_p99"); ap99+=("$a_p99")
        ratios+=("$(awk -v a="$a_rps" -v h="$h_rps" 'BEGIN {printf "%.3f", a/h}')")
        p99_ratios+=("$(awk -v a="$a_p99" -v h="$h_p99" 'BEGIN {printf "%.3f", a/h}')")
        echo "  $backend ($label) round $round: healthz $h_rps rps (p99 $h_p99 ms), account $a_rps rps (p99 $a_p99 ms), ratio ${ratios[-1]}, p99 ratio ${p99_ratios[-1]}" >&2
    done
    local ratio ratio_ci p99_ratio p99_ci h_med a_med hp a_p
    ratio=$(printf '%s\n' "${ratios[@]}" | median)
    p99_ratio=$(printf '%s\n' "${p99_ratios[@]}" | median)
    ratio_ci=$(printf '%s\n' "${ratios[@]}" | median_interval)
    p99_ci=$(printf '%s\n' "${p99_ratios[@]}" | median_interval)
    h_med=$(printf '%s\n' "${health[@]}" | median); a_med=$(printf '%s\n' "${account[@]}" | median)
    hp=$(printf '%s\n' "${hp99[@]}" | median); a_p=$(printf '%s\n' "${ap99[@]}" | median)
    cat <<ROWS
| $backend | GET /healthz (paired with the next row) | $h_med | $hp |
| $backend | GET /v1/account (authenticated, $label) | $a_med | $a_p |
| $backend | **ratio account ($label) / healthz (median of $ROUNDS paired rounds; 95% interval $ratio_ci)** | **$ratio** | p99 ratio (median) **$p99_ratio** ($p99_ci) |
ROWS
}

run_backend() {
    local backend=$1 url db_name=""
    if [[ $backend == sqlite ]]; then
        url="sqlite://$LUA/bench.db"
    else
        db_name="bench_$(date +%s)_$RANDOM"
        psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $db_name" >/dev/null
        url="${PG_ADMIN_URL%/*}/$db_name"
    fi

    if [[ -n ${BENCH_SEED_KEYS:-} ]]; then
        DATABASE_URL="$url" "$BIN" migrate >/dev/null 2>&1
        scripts/seed-keys.sh "$url" "$BENCH_SEED_KEYS"
    fi
    start_server "$url"
    local key hot="" cold=""; key=$(signup_key)
    curl -sf "$BASE/v1/account" -H "Authorization: Bearer $key" >/dev/null
    [[ $PARTS == *hot* ]] && hot=$(paired_rounds "$backend" "cached" "$key")
    # The cold path: no cache, so every request reads the store (the same key, no merging).
    stop_server
    start_server "$url" CACHE_MAX_KEYS=0
    [[ $PARTS == *cold* ]] && cold=$(paired_rounds "$backend" "cache off: every request reads the database" "$key")
    if [[ $PARTS != *rest* ]]; then
        stop_server
        [[ -n $db_name ]] && psql "$PG_ADMIN_URL" -qc "DROP DATABASE $db_name WITH (FORCE)" >/dev/null
        printf '%s\n' "$hot" "$cold" | grep -v '^$' || true
        return
    fi

    # Cache-miss path: 2000 distinct keys through a cache of 100, so nearly every request
    # reads the database.
    local keys_file="$LUA/keys.txt"
    python3 - "$PORT" "$keys_file" <<'PY'
import http.client, json, random, sys
port, out = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)
def call(method, path, body=None, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    return json.loads(conn.getresponse().read())["data"]
keys = []
for org in range(20):
    email = f"miss{org}-{random.randrange(10**9)}@bench.test"
    main = call("POST", "/v1/signup", {"name": "Bench", "email": email})["api_key"]["key"]
    keys.append(main)
    keys += [call("POST", "/v1/account/api-keys", {}, main)["key"] for _ in range(99)]
open(out, "w").write("\n".join(keys) + "\n")
PY
    stop_server
    start_server "$url" CACHE_MAX_KEYS=100
    read -r m_rps m_p99 < <(BENCH_KEYS_FILE="$keys_file" load "$BASE/v1/account" -s "$LUA/many_keys.lua")
    read -r c_rps c_p99 < <(BENCH_KEY="$(signup_key)" load "$BASE/v1/account/api-keys" -s "$LUA/create_key.lua")
    read -r s_rps s_p99 < <(load "$BASE/v1/signup" -s "$LUA/signup.lua")
    local rss; rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$SERVER_PID/status")
    stop_server
    [[ -n $db_name ]] && psql "$PG_ADMIN_URL" -qc "DROP DATABASE $db_name WITH (FORCE)" >/dev/null

    printf '%s\n' "$hot" "$cold" | grep -v '^$' || true
    cat <<ROWS
| $backend | GET /v1/account, 2000 keys through a 100-key cache (miss path) | $m_rps | $m_p99 |
| $backend | POST /v1/account/api-keys | $c_rps | $c_p99 |
| $backend | POST /v1/signup | $s_rps | $s_p99 |
| $backend | resident memory after the load (MiB) | $rss | |
ROWS
}

{
    echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB; server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU; wrk -t1 -c$CONNS -d${SECS}s; ${BENCH_SEED_KEYS:-no} keys seeded; $(date -u +%F)"
    echo
    echo "| backend | what | requests/s | p99 latency (ms) |"
    echo "|---|---|---|---|"
    case $BACKENDS in
        sqlite|postgres) run_backend "$BACKENDS" ;;
        both) run_backend sqlite; run_backend postgres ;;
        *) echo "usage: $0 [sqlite|postgres|both]" >&2; exit 2 ;;
    esac
} | tee "$OUT/results.md"

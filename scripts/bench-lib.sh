# What the load scripts (bench.sh, webhook-load.sh) share, sourced by them: wrk, the release
# binary, a server on $PORT pinned to $SERVER_CPU (its log in $OUT/${SERVER_LOG:-server.log}),
# a signup, and the median of numbers.

# Installs wrk when missing.
ensure_wrk() {
    if ! command -v wrk >/dev/null; then
        echo "installing wrk..." >&2
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    fi
}

# The binary measured: $BENCH_BIN, or this tree's release build.
release_binary() {
    if [[ -n ${BENCH_BIN:-} ]]; then
        echo "$BENCH_BIN"
    else
        cargo build --release --quiet
        echo target/release/account-api
    fi
}

# start_server URL [VARIABLE=value...]: runs $BIN on URL, waits until it is ready.
start_server() {
    local url=$1; shift
    # One client address makes every request: the per-address limits and the key cap would
    # measure refusals, not work.
    env RATE_LIMIT_SIGNUPS_PER_HOUR=0 RATE_LIMIT_WRITES_PER_MINUTE=0 MAX_ACTIVE_KEYS_PER_ORG=100000 "$@" \
        DATABASE_URL="$url" BIND_ADDR="127.0.0.1:$PORT" RUST_LOG=warn LOG_FORMAT=json \
        taskset -c "$SERVER_CPU" "$BIN" >"$OUT/${SERVER_LOG:-server.log}" 2>&1 &
    SERVER_PID=$!
    # For a trap of a caller that runs this in a subshell (a pipeline), where SERVER_PID is lost.
    if [[ -n ${PID_FILE:-} ]]; then echo "$SERVER_PID" >"$PID_FILE"; fi
    # Ready: the warm start is over.
    for _ in $(seq 1 600); do curl -sf "$BASE/readyz" >/dev/null && return 0; sleep 0.1; done
    echo "server did not start" >&2; cat "$OUT/${SERVER_LOG:-server.log}" >&2; exit 1
}

stop_server() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=; }

# A new organization's first key.
signup_key() {
    curl -sf -X POST "$BASE/v1/signup" -H 'content-type: application/json' \
        -d "{\"name\": \"Bench\", \"email\": \"bench-$RANDOM$RANDOM@bench.test\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["api_key"]["key"])'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

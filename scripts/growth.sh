#!/usr/bin/env bash
# How the cost grows (docs/performance.md): resident memory and time to become ready with
# 0, 10,000, 100,000 and 1,000,000 recently used keys (the warm start loads them all into
# the cache), on SQLite, all of one organization; SPREAD keys over SPREAD_ORGS organizations
# (1,000,000 over 100,000); for 100,000 on PostgreSQL; and the load that idle instances'
# change-feed polling puts on PostgreSQL, for 1 and 10 instances (PG=0 skips PostgreSQL).
#
# Usage: scripts/growth.sh   (env: BENCH_BIN, PG_ADMIN_URL, SIZES, SPREAD, SPREAD_ORGS, INSTANCES, PG)
set -euo pipefail
cd "$(dirname "$0")/.."
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SIZES=${SIZES:-0 10000 100000 1000000}
INSTANCES=${INSTANCES:-1 10}
SPREAD=${SPREAD-1000000}
SPREAD_ORGS=${SPREAD_ORGS:-100000}
PG=${PG:-1}
if [[ -n ${BENCH_BIN:-} ]]; then BIN=$BENCH_BIN; else cargo build --release --quiet; BIN=target/release/account-api; fi
WORK=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT

new_pg_db() {
    local name="growth_$(date +%s%N)_$RANDOM"
    psql "$PG_ADMIN_URL" -qc "CREATE DATABASE $name" >/dev/null
    echo "${PG_ADMIN_URL%/*}/$name"
}
drop_pg_db() { psql "$PG_ADMIN_URL" -qc "DROP DATABASE ${1##*/} WITH (FORCE)" >/dev/null; }

# start URL PORT [VAR=VALUE...]: starts an instance; its pid in $STARTED
start() {
    local url=$1 port=$2; shift 2
    env "$@" DATABASE_URL="$url" BIND_ADDR="127.0.0.1:$port" RUST_LOG=info LOG_FORMAT=json "$BIN" \
        >"$WORK/server-$port.log" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

# ready_after URL N: seconds from start to /readyz 200, the warm start's own ms, and the
# resident MiB once ready, for an instance on URL holding N recently used keys.
ready_after() {
    local url=$1 n=$2 port=18201
    local max=$(( n > 20000 ? n : 20000 ))
    local t0; t0=$(date +%s%N)
    start "$url" $port CACHE_MAX_KEYS=$max
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.02; done
    local t1; t1=$(date +%s%N)
    sleep 1
    local rss; rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$STARTED/status")
    local ms; ms=$(grep -o '"message":"warm start: recently used keys loaded"[^}]*' "$WORK/server-$port.log" | grep -o '"ms":[0-9]*' | cut -d: -f2)
    local keys; keys=$(grep -o '"message":"warm start: recently used keys loaded"[^}]*' "$WORK/server-$port.log" | grep -o '"keys":[0-9]*' | cut -d: -f2)
    kill -TERM "$STARTED"; wait "$STARTED" 2>/dev/null || true
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b-a)/1e9}') $ms $keys $rss"
}

echo "Machine: $(nproc) cores, $(awk '/model name/ {sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
echo
echo "| backend | recently used keys | organizations | ready after (s) | warm start (ms) | keys loaded | resident MiB | bytes per cached key |"
echo "|---|---|---|---|---|---|---|---|"
# sqlite_row N ORGS: one row of the table; the resident memory without keys is the base.
base_rss=""
sqlite_row() {
    local n=$1 orgs=$2 db="sqlite://$WORK/growth-$1.db"
    DATABASE_URL=$db "$BIN" migrate >/dev/null 2>&1
    (( n > 0 )) && scripts/seed-keys.sh "$db" "$n" "$orgs" 2>/dev/null
    read -r secs ms keys rss < <(ready_after "$db" "$n")
    [[ -z $base_rss ]] && base_rss=$rss
    per=$(awk -v r="$rss" -v b="$base_rss" -v n="$n" 'BEGIN {if (n > 0) printf "%.0f", (r-b)*1048576/n; else print "–"}')
    echo "| sqlite | $n | $(( n > 0 ? orgs : 0 )) | $secs | $ms | $keys | $rss | $per |"
    rm -f "$WORK"/growth-"$n".db*
}
for n in $SIZES; do sqlite_row "$n" 1; done
[[ -n $SPREAD ]] && sqlite_row "$SPREAD" "$SPREAD_ORGS"
(( PG )) || exit 0
pg=$(new_pg_db)
DATABASE_URL=$pg "$BIN" migrate >/dev/null 2>&1
scripts/seed-keys.sh "$pg" 100000 2>/dev/null
read -r secs ms keys rss < <(ready_after "$pg" 100000)
echo "| postgres | 100000 | 1 | $secs | $ms | $keys | $rss | |"
drop_pg_db "$pg"

echo
echo "| idle instances polling the change feed | transactions/s on PostgreSQL | PostgreSQL CPU (% of one core) |"
echo "|---|---|---|"
for k in $INSTANCES; do
    pg=$(new_pg_db); name=${pg##*/}
    DATABASE_URL=$pg "$BIN" migrate >/dev/null 2>&1
    for i in $(seq 1 "$k"); do start "$pg" $((18300 + i)) CACHE_WARM_START_SECS=0; done
    sleep 3
    cpu() {
        psql "$PG_ADMIN_URL" -Atc "SELECT pid FROM pg_stat_activity WHERE datname = '$name'" |
            while read -r pid; do awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true; done |
            awk '{s += $1} END {print s + 0}'
    }
    x0=$(psql "$PG_ADMIN_URL" -Atc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$name'")
    c0=$(cpu); t0=$(date +%s%N)
    sleep 10
    x1=$(psql "$PG_ADMIN_URL" -Atc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '$name'")
    c1=$(cpu); t1=$(date +%s%N)
    hz=$(getconf CLK_TCK)
    awk -v k="$k" -v x0="$x0" -v x1="$x1" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
        'BEGIN {s = (t1 - t0) / 1e9; printf "| %d | %.0f | %.2f |\n", k, (x1 - x0) / s, (c1 - c0) / hz / s * 100}'
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
    drop_pg_db "$pg"
done

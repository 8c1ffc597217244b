#!/usr/bin/env bash
# Inserts N keys of ORGS new organizations (default 1; key i belongs to organization
# i mod ORGS) straight by SQL, each used within the last N microseconds (so a warm start
# loads them): for the growth measurements of docs/performance.md. Their secrets exist
# nowhere (random hashes).
#
# Usage: scripts/seed-keys.sh DATABASE_URL N [ORGS]   (sqlite://PATH or postgres://...; migrated)
set -euo pipefail
URL=$1
N=$2
ORGS=${3:-1}
NOW_US=$(( $(date +%s%N) / 1000 ))
ORG="org_seed$(date +%s)$RANDOM"
# Organization j (0 to ORGS - 1) is $ORG followed by j.
ORG_SQL="INSERT INTO organizations (id, name, email, email_normalized, plan_id, is_active, created_at)
    SELECT '$ORG' || j, 'Seed ' || j, '$ORG' || j || '@seed.test', '$ORG' || j || '@seed.test', 'free', TRUE, $NOW_US
    FROM"
COLUMNS="id, org_id, name, key_hash, key_prefix, environment, scopes, created_at, expires_at, revoked_at, last_used_at, allowed_ips"
case $URL in
    sqlite://*|*.db)
        python3 - "${URL#sqlite://}" <<PY
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA foreign_keys = ON")
db.execute("""WITH RECURSIVE o(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM o WHERE j < $ORGS - 1)
    $ORG_SQL o""")
db.execute("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
    INSERT INTO api_keys ($COLUMNS)
    SELECT 'key_' || lower(hex(randomblob(16))), '$ORG' || (i % $ORGS), 'Seed ' || i, lower(hex(randomblob(32))),
           'mem_live_' || substr(lower(hex(randomblob(3))), 1, 6) || '...', 'live', 'read write',
           $NOW_US, NULL, NULL, $NOW_US - i, NULL
    FROM n""")
db.commit()
PY
        ;;
    postgres://*|postgresql://*)
        psql "$URL" -qv ON_ERROR_STOP=1 <<SQL
$ORG_SQL generate_series(0, $ORGS - 1) AS j;
INSERT INTO api_keys ($COLUMNS)
SELECT 'key_' || md5(random()::text), '$ORG' || (i % $ORGS), 'Seed ' || i, md5(random()::text) || md5(random()::text),
       'mem_live_' || substr(md5(random()::text), 1, 6) || '...', 'live', 'read write',
       $NOW_US, NULL, NULL, $NOW_US - i, NULL
FROM generate_series(1, $N) AS i;
ANALYZE api_keys;
SQL
        ;;
    *) echo "usage: $0 DATABASE_URL N" >&2; exit 2 ;;
esac
echo "seeded $N keys of $ORGS organizations $ORG..." >&2

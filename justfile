# Account API tasks. `just --list` shows them.

pg_url := "postgres://postgres@127.0.0.1:5432/postgres"

# Serve on SQLite (account-api.db in this folder) at 127.0.0.1:8080.
run:
    cargo run --release

# The whole test suite on SQLite (PostgreSQL too when TEST_POSTGRES_URL is set).
test:
    cargo test --workspace

# The whole test suite on SQLite and on the local PostgreSQL, skipping nothing.
test-pg:
    TEST_POSTGRES_URL={{pg_url}} REQUIRE_POSTGRES=1 cargo test --workspace

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Fail when README.md or docs/ name (in backticks) a path or a long snake_case name (a test)
# that no longer exists, or link to a missing file or heading.
check-docs:
    python3 scripts/check-docs.py

fmt:
    cargo fmt --all

# Apply migrations to DATABASE_URL (default: the SQLite file) and exit.
migrate:
    cargo run --release -- migrate

# Regenerate crates/infra/src/schema.rs from the migrations (needs diesel_cli).
schema:
    rm -f target/schema.db
    diesel migration run --database-url target/schema.db --migration-dir migrations/sqlite
    diesel print-schema --database-url target/schema.db > crates/infra/src/schema.rs

# Instructions per request of GET /healthz, an authenticated GET /v1/account and a verification (callgrind;
# repeatable on a busy machine): `just instructions` or `just instructions path/to/account-api`.
instructions binary="":
    scripts/instructions.sh {{binary}}

# What the quota check costs POST /v1/internal/verify-key in instructions: HEAD built with and
# without it, measured alternately (`ROUNDS=5 just quota-cost`).
quota-cost:
    scripts/quota-cost.sh

# What CI runs.
ci:
    bash .ci/run

# Fuzz key parsing and request-body decoding, `seconds` each (default 60): `just fuzz 300`. Needs only
# the stable toolchain (RUSTC_BOOTSTRAP lets cargo-fuzz use its sanitizer flags). A crash
# leaves its input in fuzz/artifacts/: copy it to fuzz/regressions/<target>/ to keep it.
fuzz seconds="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run key_parsing -- -max_total_time={{seconds}}
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request_bodies -- -max_total_time={{seconds}}

# The load benchmark (see docs/performance.md): sqlite, postgres or both; the hot path (cached
# key), the cold path (CACHE_MAX_KEYS=0), the miss path, writes; then the webhook load.
bench backend="both":
    bash scripts/bench.sh {{backend}}
    bash scripts/webhook-load.sh {{backend}}

# Webhook load alone (docs/performance.md): events delivered per second to a fast local receiver,
# and key creation with one subscribed endpoint against none: sqlite, postgres or both.
bench-webhooks backend="both":
    bash scripts/webhook-load.sh {{backend}}

# How the cost grows (docs/performance.md): memory and readiness with 10k to 1M recently
# used keys, and the change feed's polling load on PostgreSQL.
growth:
    bash scripts/growth.sh

# Criterion micro-benchmarks: key parsing, authenticate on a cache hit, the speed devices
# against what they replace, and the two routes called in process (no sockets).
bench-micro:
    cargo bench -p account-domain --bench key_parsing
    cargo bench -p account-infra --bench authenticate
    cargo bench -p account-http --bench speed_devices
    cargo bench -p account-server --bench routes

# Regenerate the committed OpenAPI document from the code.
openapi:
    cargo run --quiet -- openapi > docs/openapi.json

# Schemathesis against a running server with the OpenAPI document (EXAMPLES per operation).
fuzz-api examples="50":
    bash scripts/fuzz-api.sh {{examples}}

# A client generated from docs/openapi.json (openapi-python-client) drives every operation.
generated-client:
    bash scripts/generated-client.sh

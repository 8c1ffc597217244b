-- Plans, organizations and API keys (SQLite). Times are UTC Unix microseconds.
CREATE TABLE plans (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    base_price_cents BIGINT NOT NULL
);

INSERT INTO plans (id, name, base_price_cents) VALUES
    ('free', 'Free', 0),
    ('starter', 'Starter', 4900),
    ('pro', 'Pro', 19900);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    -- Lower-cased email: the database itself keeps emails unique ignoring case.
    email_normalized TEXT NOT NULL UNIQUE,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- blake3 of the full key, hex; the key itself is never stored.
    key_hash TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL,
    environment TEXT NOT NULL,
    -- Space-separated scope words.
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);

CREATE INDEX api_keys_org_id_created_at ON api_keys (org_id, created_at);

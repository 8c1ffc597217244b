-- Usage: verifications counted per key, UTC day and outcome, written in batches; and what each
-- plan's base price includes.
ALTER TABLE plans ADD COLUMN included_requests_per_month BIGINT NOT NULL DEFAULT 0;
UPDATE plans SET included_requests_per_month = 10000 WHERE id = 'free';
UPDATE plans SET included_requests_per_month = 1000000 WHERE id = 'starter';
UPDATE plans SET included_requests_per_month = 10000000 WHERE id = 'pro';

CREATE TABLE key_usage (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- The UTC date, YYYY-MM-DD.
    day TEXT NOT NULL,
    -- valid, or why the key was refused: revoked, expired, insufficient_scope, org_inactive,
    -- ip_not_allowed.
    outcome TEXT NOT NULL,
    -- Added to by every instance's flushes, never overwritten.
    uses BIGINT NOT NULL,
    PRIMARY KEY (key_id, day, outcome)
);

-- Pruning and the monthly export read by day.
CREATE INDEX key_usage_day ON key_usage (day);

-- The last batch each writer (one process) applied, so that a batch written again after a
-- commit whose outcome was unknown is applied once.
CREATE TABLE usage_writers (
    writer TEXT PRIMARY KEY NOT NULL,
    sequence BIGINT NOT NULL,
    written_at BIGINT NOT NULL
);

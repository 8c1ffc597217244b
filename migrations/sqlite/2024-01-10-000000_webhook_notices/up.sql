-- The scheduled webhook notices sent, each once: a key's expiry notices (expiring_7d,
-- expiring_1d, expired) and an organization's usage thresholds (80, 100) per plan period.
-- A pass takes a notice's mark (INSERT ... ON CONFLICT DO NOTHING) in the transaction that
-- writes its event to the outbox: of several instances, only the one whose insert took it sends.
CREATE TABLE key_expiry_notices (
    key_id TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    notice TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (key_id, notice)
);

CREATE TABLE usage_threshold_notices (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- The plan period's first day, YYYY-MM-DD (as plan_periods.start_day).
    period_start TEXT NOT NULL,
    percent INTEGER NOT NULL,
    sent_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, period_start, percent)
);

-- The pass looks for keys expiring soon.
CREATE INDEX api_keys_expires_at ON api_keys (expires_at);

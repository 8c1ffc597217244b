PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
-- The account itself: what a plan does past what it includes, organizations that close
-- (their email free again for a new signup), the plan periods billing and the quota count,
-- and details on audit events.
ALTER TABLE plans ADD COLUMN over_limit TEXT NOT NULL DEFAULT 'bill';
UPDATE plans SET over_limit = 'block' WHERE id = 'free';

-- SQLite cannot drop the email's UNIQUE constraint: the table is rebuilt, as SQLite's
-- documentation prescribes, with foreign keys off (dropping the old table would otherwise
-- delete every key), which is why this migration runs its own transaction
-- (metadata.toml) instead of diesel's.
CREATE TABLE organizations_new (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    -- Lower-cased email: unique among open organizations (the index below).
    email_normalized TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    closed_at BIGINT
);
INSERT INTO organizations_new (id, name, email, email_normalized, plan_id, is_active, created_at)
    SELECT id, name, email, email_normalized, plan_id, is_active, created_at FROM organizations;
DROP TABLE organizations;
ALTER TABLE organizations_new RENAME TO organizations;
-- Emails are unique among open organizations only.
CREATE UNIQUE INDEX organizations_open_email ON organizations (email_normalized) WHERE closed_at IS NULL;

-- The plan an organization has from a UTC day on; the last plan of a day holds for that day.
CREATE TABLE plan_periods (
    org_id TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- The period's first UTC day, YYYY-MM-DD.
    start_day TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    PRIMARY KEY (org_id, start_day)
);
INSERT INTO plan_periods (org_id, start_day, plan_id)
    SELECT id, strftime('%Y-%m-%d', created_at / 1000000, 'unixepoch'), plan_id FROM organizations;

-- What an event changed, as a JSON object (names of fields, a plan's from and to), or NULL.
ALTER TABLE audit_events ADD COLUMN details TEXT;

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;

-- The account itself: what a plan does past what it includes, organizations that close
-- (their email free again for a new signup), the plan periods billing and the quota count,
-- and details on audit events.
ALTER TABLE plans ADD COLUMN over_limit TEXT NOT NULL DEFAULT 'bill';
UPDATE plans SET over_limit = 'block' WHERE id = 'free';

ALTER TABLE organizations ADD COLUMN closed_at BIGINT;
ALTER TABLE organizations DROP CONSTRAINT organizations_email_normalized_key;
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
    SELECT id, to_char(to_timestamp(created_at / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), plan_id
    FROM organizations;

-- What an event changed, as a JSON object (names of fields, a plan's from and to), or NULL.
ALTER TABLE audit_events ADD COLUMN details TEXT;

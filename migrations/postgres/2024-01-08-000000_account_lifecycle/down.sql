ALTER TABLE audit_events DROP COLUMN details;
DROP TABLE plan_periods;
DROP INDEX organizations_open_email;
ALTER TABLE organizations ADD CONSTRAINT organizations_email_normalized_key UNIQUE (email_normalized);
ALTER TABLE organizations DROP COLUMN closed_at;
ALTER TABLE plans DROP COLUMN over_limit;

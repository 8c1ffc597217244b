PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
ALTER TABLE audit_events DROP COLUMN details;
DROP TABLE plan_periods;
DROP INDEX organizations_open_email;
CREATE TABLE organizations_old (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    email_normalized TEXT NOT NULL UNIQUE,
    plan_id TEXT NOT NULL REFERENCES plans (id),
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL
);
-- A closed organization's email may be taken again: only the open one keeps it.
INSERT INTO organizations_old (id, name, email, email_normalized, plan_id, is_active, created_at)
    SELECT id, name, email, CASE WHEN closed_at IS NULL THEN email_normalized ELSE 'closed+' || id END,
        plan_id, is_active, created_at FROM organizations;
DROP TABLE organizations;
ALTER TABLE organizations_old RENAME TO organizations;
ALTER TABLE plans DROP COLUMN over_limit;
COMMIT;
PRAGMA foreign_keys = ON;

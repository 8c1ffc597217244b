-- The audit trail: one row per change, written in the change's own transaction.
CREATE TABLE audit_events (
    id SERIAL PRIMARY KEY,
    org_id TEXT NOT NULL,
    -- signup, key.created, key.revoked, key.rolled, key.renamed, key.leak_reported,
    -- organization.deactivated, organization.activated
    action TEXT NOT NULL,
    target_id TEXT,
    actor_key_id TEXT,
    client_ip TEXT,
    user_agent TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX audit_events_org_id_id ON audit_events (org_id, id);

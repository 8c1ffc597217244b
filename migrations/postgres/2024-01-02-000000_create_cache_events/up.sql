-- Changes every instance must apply to its credential cache, written in the same
-- transaction as the change itself and read by each instance's poller.
CREATE TABLE cache_events (
    id SERIAL PRIMARY KEY,
    -- blake3 of a key that changed (revoked...), or NULL.
    key_hash TEXT,
    -- An organization whose status or plan changed, or NULL.
    org_id TEXT,
    created_at BIGINT NOT NULL
);

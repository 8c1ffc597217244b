DROP INDEX cache_events_created_at;
DROP INDEX cache_events_xid;
ALTER TABLE cache_events DROP COLUMN xid;
ALTER SEQUENCE audit_events_id_seq AS INTEGER;
ALTER TABLE audit_events ALTER COLUMN id TYPE INTEGER;
ALTER SEQUENCE cache_events_id_seq AS INTEGER;
ALTER TABLE cache_events ALTER COLUMN id TYPE INTEGER;

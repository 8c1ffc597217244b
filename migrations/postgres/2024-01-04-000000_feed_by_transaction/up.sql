-- 64-bit ids for the two append-only tables, the writing transaction's id on every change
-- row (so that a poll bounded by transaction visibility never loses a late commit), and
-- an index that keeps pruning cheap. Existing rows are kept.
-- An instance of the previous release still running reads these ids as 32-bit integers
-- and fails to poll: it then distrusts its cache (fails closed) until it is replaced.
ALTER TABLE cache_events ALTER COLUMN id TYPE BIGINT;
ALTER SEQUENCE cache_events_id_seq AS BIGINT;
ALTER TABLE audit_events ALTER COLUMN id TYPE BIGINT;
ALTER SEQUENCE audit_events_id_seq AS BIGINT;
-- The top-level transaction that wrote the row; visible to pollers once it commits.
ALTER TABLE cache_events ADD COLUMN xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX cache_events_xid ON cache_events (xid);
CREATE INDEX cache_events_created_at ON cache_events (created_at);

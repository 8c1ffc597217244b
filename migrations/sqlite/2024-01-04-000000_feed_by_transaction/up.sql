-- SQLite's INTEGER PRIMARY KEY is already 64-bit (diesel.toml reads it as BIGINT), and its
-- single writer commits ids in order: only the index that keeps pruning cheap is new.
CREATE INDEX cache_events_created_at ON cache_events (created_at);

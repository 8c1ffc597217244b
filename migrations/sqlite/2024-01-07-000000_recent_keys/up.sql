-- The warm start loads the most recently used keys first.
CREATE INDEX api_keys_last_used_at ON api_keys (last_used_at);

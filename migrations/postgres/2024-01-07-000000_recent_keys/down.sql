DROP INDEX api_keys_last_used_at;

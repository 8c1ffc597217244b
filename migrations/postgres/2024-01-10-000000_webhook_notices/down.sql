DROP INDEX api_keys_expires_at;
DROP TABLE usage_threshold_notices;
DROP TABLE key_expiry_notices;

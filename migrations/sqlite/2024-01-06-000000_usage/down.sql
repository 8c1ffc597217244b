DROP TABLE usage_writers;
DROP TABLE key_usage;
ALTER TABLE plans DROP COLUMN included_requests_per_month;

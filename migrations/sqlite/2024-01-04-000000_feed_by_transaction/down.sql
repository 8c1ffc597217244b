DROP INDEX cache_events_created_at;

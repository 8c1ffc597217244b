DROP TABLE cache_events;

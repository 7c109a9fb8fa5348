-- How many events an export of a range holds: a report's progress is its
-- rows written over this. The source is optional ('' for all).
-- params: 'acme', 0, 1763860000000, '', ''
SELECT count()
FROM events FINAL
WHERE tenant_id = ? AND event_time_ms >= ? AND event_time_ms < ? AND (? = '' OR source_id = ?)

-- A tenant's most recent events of one source, newest first.
-- params: 'acme', 'device-00001', 10
SELECT ?fields FROM events FINAL WHERE tenant_id = ? AND source_id = ?
ORDER BY event_time_ms DESC, event_id LIMIT ?

-- A tenant's most recent events, newest first.
-- params: 'acme', 10
SELECT ?fields FROM events FINAL WHERE tenant_id = ?
ORDER BY event_time_ms DESC, event_id LIMIT ?

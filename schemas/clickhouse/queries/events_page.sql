-- A page of a tenant's events in a time range, newest first. Keyset
-- pagination: the page starts after the cursor (event_time_ms, event_id).
-- params: 'acme', 0, 1763860000000, 1763860000000, 1763860000000, '', 100
SELECT ?fields FROM events FINAL
WHERE tenant_id = ? AND event_time_ms >= ? AND event_time_ms < ?
  AND (event_time_ms < ? OR (event_time_ms = ? AND event_id < ?))
ORDER BY event_time_ms DESC, event_id DESC LIMIT ?

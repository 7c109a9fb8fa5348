-- A page of a tenant's events in a time range, newest first. Keyset
-- pagination: the page starts after the cursor (event_time_ms, event_id).
-- The inner query finds the page's keys reading only the key columns; the
-- outer one reads the whole rows of those keys alone. LIMIT 1 BY event_id
-- keeps one copy of a redelivered event, as FINAL would, at a fraction of
-- FINAL's cost on large ranges.
-- params: 'acme', 'acme', 0, 1763860000000, 1763860000000, 1763860000000, '', 100, 100
SELECT ?fields FROM events
WHERE tenant_id = ? AND (event_time_ms, event_id) IN
(
    SELECT event_time_ms, event_id FROM events
    WHERE tenant_id = ? AND event_time_ms >= ? AND event_time_ms < ?
      AND (event_time_ms < ? OR (event_time_ms = ? AND event_id < ?))
    ORDER BY event_time_ms DESC, event_id DESC LIMIT 1 BY event_id LIMIT ?
)
ORDER BY event_time_ms DESC, event_id DESC LIMIT 1 BY event_id LIMIT ?

-- As events_page, for one source.
-- params: 'acme', 'device-00001', 'acme', 'device-00001', 0, 1763860000000, 1763860000000, 1763860000000, '', 100, 100
SELECT ?fields FROM events
WHERE tenant_id = ? AND source_id = ? AND (event_time_ms, event_id) IN
(
    SELECT event_time_ms, event_id FROM events
    WHERE tenant_id = ? AND source_id = ? AND event_time_ms >= ? AND event_time_ms < ?
      AND (event_time_ms < ? OR (event_time_ms = ? AND event_id < ?))
    ORDER BY event_time_ms DESC, event_id DESC LIMIT 1 BY event_id LIMIT ?
)
ORDER BY event_time_ms DESC, event_id DESC LIMIT 1 BY event_id LIMIT ?

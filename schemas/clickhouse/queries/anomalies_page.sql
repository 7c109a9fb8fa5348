-- As events_page, only the events the model flagged.
-- params: 'acme', 0, 1763860000000, 1763860000000, 1763860000000, '', 100
SELECT ?fields FROM events FINAL
WHERE tenant_id = ? AND is_anomaly = 1 AND event_time_ms >= ? AND event_time_ms < ?
  AND (event_time_ms < ? OR (event_time_ms = ? AND event_id < ?))
ORDER BY event_time_ms DESC, event_id DESC LIMIT ?

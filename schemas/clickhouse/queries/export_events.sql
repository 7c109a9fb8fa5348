-- A tenant's events in a time range, oldest first, for export. The format
-- (CSVWithNames or JSONEachRow) is added by the client.
-- params: 'acme', 0, 1763860000000
SELECT tenant_id, source_id, event_id, kind, event_time_ms, reading_names, reading_values,
       event_type, properties_json, firmware_version, score, is_anomaly, model_version,
       device_seq, feature_names, feature_values
FROM events FINAL
WHERE tenant_id = ? AND event_time_ms >= ? AND event_time_ms < ?
ORDER BY event_time_ms, event_id

-- A tenant's devices with their totals, from the per-minute rollup.
-- params: 'acme', 100
SELECT source_id, toUInt32(max(minute)) AS last_minute, countMerge(events) AS events,
       sumMerge(anomalies) AS anomalies, maxMerge(score_max) AS score_max
FROM device_minute WHERE tenant_id = ?
GROUP BY source_id ORDER BY source_id LIMIT ?

-- One device's time series at a resolution of whole minutes, from the
-- per-minute rollup; buckets are aligned to the epoch.
-- params: 3600, 3600, 'acme', 'device-00001', 1763850000, 1763860000
SELECT toUInt32(intDiv(toUInt32(minute), ?) * ?) AS bucket, countMerge(events) AS events,
       sumMerge(anomalies) AS anomalies, maxMerge(score_max) AS score_max,
       avgMerge(score_avg) AS score_avg
FROM device_minute
WHERE tenant_id = ? AND source_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)
GROUP BY bucket ORDER BY bucket

-- Count, mean, extremes and quantiles of one measure of a tenant's events in
-- a time range, per group. The group is chosen by a bound value: 'device'
-- (source_id), 'event_type', 'kind', or anything else for one group of all.
-- The measure is 'score' or a reading's name; events without that reading are
-- left out. An empty source_id means every source.
-- params: 'device', 'device', 'device', 'temperature_c', 'temperature_c', 'acme', 0, 1763860000000, '', '', 'temperature_c', 'temperature_c', 1000
SELECT multiIf(? = 'device', source_id, ? = 'event_type', event_type, ? = 'kind', kind, '') AS key,
       count() AS count, avg(value) AS avg, min(value) AS min, max(value) AS max,
       quantiles(0.5, 0.9, 0.99)(value) AS quantiles
FROM
(
    SELECT source_id, event_type, kind,
           if(? = 'score', toFloat64(score), reading_values[indexOf(reading_names, ?)]) AS value
    FROM events FINAL
    WHERE tenant_id = ? AND event_time_ms >= ? AND event_time_ms < ?
      AND (? = '' OR source_id = ?)
      AND (? = 'score' OR has(reading_names, ?))
)
GROUP BY key ORDER BY key LIMIT ?

-- Feeds device_minute from every insert into events. The processor inserts
-- each event exactly once, so the rollup counts each event once too.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_minute_mv TO {db}.device_minute AS
SELECT
    tenant_id,
    source_id,
    toStartOfMinute(event_time) AS minute,
    countState() AS events,
    sumState(is_anomaly) AS anomalies,
    maxState(score) AS score_max,
    avgState(score) AS score_avg
FROM {db}.events
GROUP BY tenant_id, source_id, minute

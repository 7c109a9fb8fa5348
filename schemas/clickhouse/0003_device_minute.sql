-- Per device per minute rollup of the events table, kept by the
-- materialized view of 0004, for fast time series reads. Read with
-- countMerge(events), sumMerge(anomalies), maxMerge(score_max),
-- avgMerge(score_avg) ... GROUP BY tenant_id, source_id, minute.
CREATE TABLE IF NOT EXISTS {db}.device_minute
(
    tenant_id  String,
    source_id  String,
    minute     DateTime('UTC'),
    events     AggregateFunction(count),
    anomalies  AggregateFunction(sum, UInt8),
    score_max  AggregateFunction(max, Float32),
    score_avg  AggregateFunction(avg, Float32)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, source_id, minute)

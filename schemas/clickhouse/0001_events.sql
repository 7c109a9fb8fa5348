-- Every event the processor has handled, with its anomaly score.
-- ReplacingMergeTree keyed on the event id collapses redelivered copies of an event.
CREATE TABLE IF NOT EXISTS {db}.events
(
    tenant_id       String,
    source_id       String,
    event_id        String,
    kind            String,
    event_date      Date DEFAULT toDate(event_time),
    event_time      DateTime('UTC'),
    event_time_ms   Int64,
    schema_id       UInt32,
    reading_names   Array(String),
    reading_values  Array(Float64),
    event_type      String,
    properties_json String,
    firmware_version String,
    score           Float32,
    is_anomaly      UInt8,
    model_version   String,
    processed_ms    Int64
)
ENGINE = ReplacingMergeTree(processed_ms)
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant_id, source_id, event_time_ms, event_id)

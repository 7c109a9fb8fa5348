-- What OCR jobs read: one row per snapshot (item) of a job, written by the
-- worker as each is read. A job that resumes after a crash skips the items
-- it finds here, and a row written twice (a crash between the write and
-- the progress record) collapses on the key. `lines` is the JSON array of
-- lines (text, confidence, box); `event_id` is the telemetry event the
-- meter value was published as (empty when none was). Created by whichever
-- service starts first.
CREATE TABLE IF NOT EXISTS {db}.ocr_reads
(
    tenant_id  String,
    job_id     String,
    item       UInt32,
    file_id    String,
    source_id  String,
    lines      String,
    has_value  UInt8,
    value      Float64,
    event_id   String,
    error      String,
    taken_ms   Int64,
    read_ms    Int64
)
ENGINE = ReplacingMergeTree(read_ms)
ORDER BY (tenant_id, job_id, item)

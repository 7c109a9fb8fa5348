-- Every job's transitions: one row per change of state or progress, the
-- newest (highest version) standing for the job. Written by the query API
-- (queued, and canceled before a worker took the job) and by the workers
-- (running, progress, the end); read FINAL. Created by whichever service
-- starts first (it is not one of the processor's numbered migrations).
CREATE TABLE IF NOT EXISTS {db}.jobs
(
    tenant_id      String,
    job_id         String,
    kind           String,
    params         String,
    inputs         Array(String),
    state          String,
    attempts       UInt32,
    progress       Float32,
    error          String,
    result_file_id String,
    created_ms     Int64,
    updated_ms     Int64,
    version        UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, job_id)

-- Tenants' report schedules: one row per change, the newest (highest
-- version) standing; a deleted schedule is a row with deleted = 1. Written
-- and read by the query API, read FINAL. Created with the jobs table.
CREATE TABLE IF NOT EXISTS {db}.schedules
(
    tenant_id  String,
    name       String,
    kind       String,
    cron       String,
    params     String,
    created_ms Int64,
    updated_ms Int64,
    deleted    UInt8,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, name)

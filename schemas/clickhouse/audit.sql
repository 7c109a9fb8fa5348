-- Every request to the query API: who, which tenant, which route with which
-- parameters, how many rows it returned, its status and latency. Written in
-- batches by the API; searched by the tenant's admins. The API's own table:
-- the query API creates it before its first write (it is not one of the
-- processor's numbered migrations).
CREATE TABLE IF NOT EXISTS {db}.audit
(
    time       DateTime('UTC'),
    time_ms    Int64,
    caller     String,
    role       String,
    tenant     String,
    method     String,
    route      String,
    params     String,
    rows       UInt64,
    status     UInt16,
    latency_ms Float32
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (tenant, time_ms)

-- Which migrations of schemas/clickhouse/ a database has had.
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version    UInt32,
    applied_at DateTime('UTC') DEFAULT now()
)
ENGINE = MergeTree
ORDER BY version

-- How many of the tables the query API reads and writes exist (3 when ready).
SELECT count() FROM system.tables
WHERE database = currentDatabase() AND name IN ('events', 'device_minute', 'audit')

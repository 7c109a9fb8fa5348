-- The highest Kafka offset stored for a partition; count() tells "none" from offset 0.
-- params: 'pulse.telemetry', 0
SELECT count(), max(source_offset) FROM events WHERE source_topic = ? AND source_partition = ?

-- Where each row came from in Kafka. The processor inserts a record only if
-- its offset is not stored yet for its partition, so a batch replayed after
-- a crash is never stored twice.
ALTER TABLE {db}.events
    ADD COLUMN source_topic String,
    ADD COLUMN source_partition Int32,
    ADD COLUMN source_offset Int64

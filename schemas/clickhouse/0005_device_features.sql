-- The processor's per-device state at each event: its position in the
-- device's sequence and the rolling features the model was given.
ALTER TABLE {db}.events
    ADD COLUMN device_seq UInt64,
    ADD COLUMN feature_names Array(String),
    ADD COLUMN feature_values Array(Float64)

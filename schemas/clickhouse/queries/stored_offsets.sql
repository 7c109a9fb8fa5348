-- What a partition holds from a batch's first offset on: the offsets up to the batch's last,
-- how many rows in all (count() tells "none" from offset 0) and the highest offset.
-- params: 41, 'pulse.telemetry', 0, 41
SELECT arraySort(groupArrayIf(source_offset, source_offset <= ?)), count(), max(source_offset)
FROM events
WHERE source_topic = ? AND source_partition = ? AND source_offset >= ?

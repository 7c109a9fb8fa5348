-- The newest snapshot read of each of a tenant's sources (all of them, or
-- one), newest first: what the dashboard draws over each camera's image.
-- params: 'acme', '', '', 100
SELECT ?fields
FROM ocr_reads FINAL
WHERE tenant_id = ? AND source_id != '' AND error = '' AND (? = '' OR source_id = ?)
ORDER BY taken_ms DESC, read_ms DESC
LIMIT 1 BY source_id
LIMIT ?

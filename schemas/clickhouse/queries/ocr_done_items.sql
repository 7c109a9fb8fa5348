-- The items of a tenant's OCR job read so far, for a resumed attempt.
-- params: 'acme', '0f1e2d3c4b5a69788796a5b4c3d2e1f0'
SELECT DISTINCT item
FROM ocr_reads
WHERE tenant_id = ? AND job_id = ?

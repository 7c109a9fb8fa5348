-- A page of a tenant's OCR job's reads, in item order, after an item.
-- params: 'acme', '0f1e2d3c4b5a69788796a5b4c3d2e1f0', -1, 100
SELECT ?fields
FROM ocr_reads FINAL
WHERE tenant_id = ? AND job_id = ? AND item > ?
ORDER BY item
LIMIT ?

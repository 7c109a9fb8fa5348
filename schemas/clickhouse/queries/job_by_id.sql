-- One job of a tenant, as its newest transition has it.
-- params: 'acme', '0f1e2d3c4b5a69788796a5b4c3d2e1f0'
SELECT ?fields
FROM jobs FINAL
WHERE tenant_id = ? AND job_id = ?

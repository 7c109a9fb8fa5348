-- A page of a tenant's jobs, newest first, after the page key (created_ms,
-- job_id), optionally of one state and one kind. The state and kind are
-- filtered outside FINAL: filtered inside, an older transition could match.
-- params: 'acme', '', '', '', '', 9223372036854775807, 9223372036854775807, '', 100
SELECT ?fields
FROM (SELECT * FROM jobs FINAL WHERE tenant_id = ?)
WHERE (? = '' OR state = ?) AND (? = '' OR kind = ?)
  AND (created_ms < ? OR (created_ms = ? AND job_id < ?))
ORDER BY created_ms DESC, job_id DESC
LIMIT ?

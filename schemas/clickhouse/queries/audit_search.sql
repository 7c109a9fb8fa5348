-- A tenant's audit trail in a time range, newest first, optionally of one
-- caller, one route (as the API names it, e.g. /v1/files/{file_id}) and one status.
-- params: 'acme', 0, 1763860000000, '', '', '', '', 0, 0, 100
SELECT ?fields
FROM audit
WHERE tenant = ? AND time_ms >= ? AND time_ms < ? AND (? = '' OR caller = ?)
  AND (? = '' OR route = ?) AND (? = 0 OR status = ?)
ORDER BY time_ms DESC LIMIT ?

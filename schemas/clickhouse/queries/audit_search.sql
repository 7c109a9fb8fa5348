-- A tenant's audit trail in a time range, newest first, optionally of one caller.
-- params: 'acme', 0, 1763860000000, '', '', 100
SELECT ?fields
FROM audit
WHERE tenant = ? AND time_ms >= ? AND time_ms < ? AND (? = '' OR caller = ?)
ORDER BY time_ms DESC LIMIT ?

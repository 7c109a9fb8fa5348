-- A tenant's schedules, by name; one name only when the second is not ''.
-- Deleted ones are filtered outside FINAL: filtered inside, an older row
-- of a deleted schedule could stand.
-- params: 'acme', '', '', 1000
SELECT ?fields
FROM (SELECT * FROM schedules FINAL WHERE tenant_id = ?)
WHERE deleted = 0 AND (? = '' OR name = ?)
ORDER BY name
LIMIT ?

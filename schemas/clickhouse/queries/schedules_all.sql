-- Every tenant's schedules, for the scheduler. Deleted ones are filtered
-- outside FINAL, as in schedules_of_tenant.
SELECT ?fields
FROM (SELECT * FROM schedules FINAL)
WHERE deleted = 0
ORDER BY tenant_id, name

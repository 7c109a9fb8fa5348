-- One event of a tenant. FINAL collapses redelivered copies.
-- params: 'acme', '6f1c4c1e-1d8c-4a55-9a57-6f3c2f0d2b11'
SELECT ?fields FROM events FINAL WHERE tenant_id = ? AND event_id = ? LIMIT 1

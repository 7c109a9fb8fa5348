-- params: 5
INSERT INTO {db}.schema_migrations (version) VALUES (?)

SELECT version FROM {db}.schema_migrations

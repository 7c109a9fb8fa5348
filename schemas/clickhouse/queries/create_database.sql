-- Runs without a default database, before any migration.
CREATE DATABASE IF NOT EXISTS {db}

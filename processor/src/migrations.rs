//! ClickHouse DDL from `schemas/clickhouse/`, applied in order and recorded
//! in `schema_migrations` so each runs once per database.

use clickhouse::Client;

/// (version, statement); `{db}` stands for the database name.
const MIGRATIONS: &[(u32, &str)] = &[(1, include_str!("../../schemas/clickhouse/0001_events.sql"))];

pub async fn apply(client: &Client, database: &str) -> anyhow::Result<()> {
    // The database may not exist yet, so these run without a default database.
    let admin = client.clone().with_database("default");
    admin
        .query(&format!("CREATE DATABASE IF NOT EXISTS {database}"))
        .execute()
        .await?;
    admin
        .query(&format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations \
             (version UInt32, applied_at DateTime('UTC') DEFAULT now()) \
             ENGINE = MergeTree ORDER BY version"
        ))
        .execute()
        .await?;
    let applied: Vec<u32> = admin
        .query(&format!("SELECT version FROM {database}.schema_migrations"))
        .fetch_all()
        .await?;
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let statement = sql.replace("{db}", database);
        admin
            .query(&statement)
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} failed: {e}"))?;
        admin
            .query(&format!(
                "INSERT INTO {database}.schema_migrations (version) VALUES (?)"
            ))
            .bind(*version)
            .execute()
            .await?;
        tracing::info!(version, "ClickHouse migration applied");
    }
    Ok(())
}

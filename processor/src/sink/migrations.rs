//! The processor's tables: ClickHouse DDL from `schemas/clickhouse/0*.sql`,
//! applied in order and recorded in `schema_migrations` so each runs once
//! per database. (The query API creates its own audit table.)

use clickhouse::Client;
use pulse_common::clickhouse::{for_cluster, in_database};

macro_rules! statement {
    ($name:literal) => {
        include_str!(concat!(
            "../../../schemas/clickhouse/queries/",
            $name,
            ".sql"
        ))
    };
}

const CREATE_DATABASE: &str = statement!("create_database");
const SCHEMA_MIGRATIONS_TABLE: &str = statement!("schema_migrations_table");
const APPLIED_MIGRATIONS: &str = statement!("applied_migrations");
const RECORD_MIGRATION: &str = statement!("record_migration");

/// (version, statement); `{db}` stands for the database name.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        include_str!("../../../schemas/clickhouse/0001_events.sql"),
    ),
    (
        2,
        include_str!("../../../schemas/clickhouse/0002_source_offsets.sql"),
    ),
    (
        3,
        include_str!("../../../schemas/clickhouse/0003_device_minute.sql"),
    ),
    (
        4,
        include_str!("../../../schemas/clickhouse/0004_device_minute_mv.sql"),
    ),
    (
        5,
        include_str!("../../../schemas/clickhouse/0005_device_features.sql"),
    ),
];

pub async fn apply(client: &Client, database: &str, cluster: Option<&str>) -> anyhow::Result<()> {
    // The database may not exist yet, so these run without a default database.
    let admin = client.clone().with_database("default");
    let ddl = |statement: String| for_cluster(&statement, cluster);
    for statement in [CREATE_DATABASE, SCHEMA_MIGRATIONS_TABLE] {
        admin
            .query(&ddl(in_database(statement, database)))
            .execute()
            .await?;
    }
    let applied: Vec<u32> = admin
        .query(&in_database(APPLIED_MIGRATIONS, database))
        .fetch_all()
        .await?;
    for (version, statement) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        admin
            .query(&ddl(in_database(statement, database)))
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} failed: {e}"))?;
        admin
            .query(&in_database(RECORD_MIGRATION, database))
            .bind(*version)
            .execute()
            .await?;
        tracing::info!(version, "ClickHouse migration applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pulse_common::clickhouse::for_cluster;

    #[test]
    fn shipped_migrations_rewrite_for_a_cluster() {
        for (_, sql) in super::MIGRATIONS {
            let clustered = for_cluster(&sql.replace("{db}", "pulse"), Some("pulse"));
            assert!(clustered.contains("ON CLUSTER 'pulse'"), "{clustered}");
            if clustered.contains("ENGINE") {
                assert!(clustered.contains("ENGINE = Replicated"), "{clustered}");
            }
        }
        assert_eq!(
            for_cluster("ALTER TABLE d.t\n    ADD COLUMN a Int8", Some("c")),
            "ALTER TABLE d.t ON CLUSTER 'c'\n    ADD COLUMN a Int8"
        );
    }
}

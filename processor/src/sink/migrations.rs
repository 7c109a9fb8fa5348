//! ClickHouse DDL from `schemas/clickhouse/`, applied in order and recorded
//! in `schema_migrations` so each runs once per database.

use clickhouse::Client;
use pulse_common::sql;

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
    (
        6,
        include_str!("../../../schemas/clickhouse/0006_audit.sql"),
    ),
];

/// Rewrites a single-server statement for a replicated cluster: the DDL runs
/// ON CLUSTER and MergeTree-family engines become their Replicated kind, with
/// the Keeper path and replica name taken from the servers' macros.
pub fn for_cluster(statement: &str, cluster: Option<&str>) -> String {
    let Some(cluster) = cluster else {
        return statement.to_string();
    };
    let mut out = String::with_capacity(statement.len() + 128);
    let mut rest = statement;
    // ON CLUSTER goes right after the created object's name.
    for keyword in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE DATABASE IF NOT EXISTS ",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS ",
        "ALTER TABLE ",
    ] {
        if let Some(start) = rest.find(keyword) {
            let name_start = start + keyword.len();
            let name_len = rest[name_start..]
                .find(|c: char| c.is_whitespace() || c == '(')
                .unwrap_or(rest.len() - name_start);
            out.push_str(&rest[..name_start + name_len]);
            out.push_str(&format!(" ON CLUSTER '{cluster}'"));
            rest = &rest[name_start + name_len..];
            break;
        }
    }
    out.push_str(rest);
    let engine = "ENGINE = ";
    if let Some(pos) = out.find(engine) {
        let after = pos + engine.len();
        let name_end = out[after..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(out.len(), |i| after + i);
        let name = out[after..name_end].to_string();
        if name.ends_with("MergeTree") && !name.starts_with("Replicated") {
            let keeper = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'";
            let args = if out[name_end..].starts_with("()") || !out[name_end..].starts_with('(') {
                format!("({keeper})")
            } else {
                format!("({keeper}, ")
            };
            let skip = if out[name_end..].starts_with("()") {
                2
            } else if out[name_end..].starts_with('(') {
                1
            } else {
                0
            };
            out = format!(
                "{}Replicated{name}{args}{}",
                &out[..after],
                &out[name_end + skip..]
            );
        }
    }
    out
}

pub async fn apply(client: &Client, database: &str, cluster: Option<&str>) -> anyhow::Result<()> {
    // The database may not exist yet, so these run without a default database.
    let admin = client.clone().with_database("default");
    let ddl = |statement: String| for_cluster(&statement, cluster);
    for statement in [sql::CREATE_DATABASE, sql::SCHEMA_MIGRATIONS_TABLE] {
        admin
            .query(&ddl(sql::in_database(statement, database)))
            .execute()
            .await?;
    }
    let applied: Vec<u32> = admin
        .query(&sql::in_database(sql::APPLIED_MIGRATIONS, database))
        .fetch_all()
        .await?;
    for (version, statement) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        admin
            .query(&ddl(sql::in_database(statement, database)))
            .execute()
            .await
            .map_err(|e| anyhow::anyhow!("migration {version} failed: {e}"))?;
        admin
            .query(&sql::in_database(sql::RECORD_MIGRATION, database))
            .bind(*version)
            .execute()
            .await?;
        tracing::info!(version, "ClickHouse migration applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::for_cluster;

    #[test]
    fn single_server_statements_are_unchanged() {
        let sql = "CREATE TABLE IF NOT EXISTS pulse.t (a UInt8) ENGINE = MergeTree ORDER BY a";
        assert_eq!(for_cluster(sql, None), sql);
    }

    #[test]
    fn cluster_statements_run_on_cluster_with_replicated_engines() {
        assert_eq!(
            for_cluster(
                "CREATE TABLE IF NOT EXISTS pulse.events\n(a UInt8)\nENGINE = ReplacingMergeTree(processed_ms)\nORDER BY a",
                Some("pulse")
            ),
            "CREATE TABLE IF NOT EXISTS pulse.events ON CLUSTER 'pulse'\n(a UInt8)\nENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', processed_ms)\nORDER BY a"
        );
        assert_eq!(
            for_cluster("CREATE TABLE IF NOT EXISTS d.m (v UInt32) ENGINE = MergeTree ORDER BY v", Some("c")),
            "CREATE TABLE IF NOT EXISTS d.m ON CLUSTER 'c' (v UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}') ORDER BY v"
        );
        assert_eq!(
            for_cluster("CREATE DATABASE IF NOT EXISTS pulse", Some("c")),
            "CREATE DATABASE IF NOT EXISTS pulse ON CLUSTER 'c'"
        );
    }

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

//! Every statement Pulse sends to ClickHouse, besides the migrations, from
//! `schemas/clickhouse/queries/`: keeping them as files lets one test run
//! each of them on both the ClickHouse server and current ClickHouse
//! (chdb). `{db}` stands for a database name, `?` for a bound value and
//! `?fields` for the columns of the row type fetched.

macro_rules! statement {
    ($name:literal) => {
        include_str!(concat!("../../schemas/clickhouse/queries/", $name, ".sql"))
    };
}

pub const CREATE_DATABASE: &str = statement!("create_database");
pub const SCHEMA_MIGRATIONS_TABLE: &str = statement!("schema_migrations_table");
pub const APPLIED_MIGRATIONS: &str = statement!("applied_migrations");
pub const RECORD_MIGRATION: &str = statement!("record_migration");
pub const STORED_WATERMARK: &str = statement!("stored_watermark");
pub const EVENTS_TABLE_EXISTS: &str = statement!("events_table_exists");
pub const EVENT_BY_ID: &str = statement!("event_by_id");
pub const RECENT_EVENTS: &str = statement!("recent_events");
pub const RECENT_EVENTS_OF_SOURCE: &str = statement!("recent_events_of_source");

/// `statement` for database `db`.
pub fn in_database(statement: &str, db: &str) -> String {
    statement.replace("{db}", db)
}

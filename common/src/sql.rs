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
pub const STORED_OFFSETS: &str = statement!("stored_offsets");
pub const API_TABLES_EXIST: &str = statement!("api_tables_exist");
pub const AGGREGATES: &str = statement!("aggregates");
pub const AUDIT_SEARCH: &str = statement!("audit_search");
pub const EVENT_BY_ID: &str = statement!("event_by_id");
pub const EVENTS_PAGE: &str = statement!("events_page");
pub const EVENTS_PAGE_OF_SOURCE: &str = statement!("events_page_of_source");
pub const ANOMALIES_PAGE: &str = statement!("anomalies_page");
pub const DEVICES: &str = statement!("devices");
pub const DEVICE_SERIES: &str = statement!("device_series");
pub const EXPORT_EVENTS: &str = statement!("export_events");
pub const EXPORT_EVENTS_OF_SOURCE: &str = statement!("export_events_of_source");

/// `statement` for database `db`.
pub fn in_database(statement: &str, db: &str) -> String {
    statement.replace("{db}", db)
}

//! Every statement the query API sends to ClickHouse, from
//! `schemas/clickhouse/`: keeping them as files lets one test run each of
//! them on both the ClickHouse server and current ClickHouse (chdb). `{db}`
//! stands for a database name, `?` for a bound value and `?fields` for the
//! columns of the row type fetched.

use pulse_common::statement;

/// The API's own table, created before the audit writer's first insert.
pub const AUDIT_TABLE: &str = include_str!("../../schemas/clickhouse/audit.sql");
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

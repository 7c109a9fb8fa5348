//! Pulse query API: scored events over HTTP and live over WebSocket, for
//! authenticated callers, each scoped to its tenant.

pub mod admin;
pub mod aggregates;
pub mod app;
pub mod audit;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod csv_guard;
pub mod dashboard;
pub mod error;
pub mod export;
pub mod extract;
pub mod fanout;
pub mod files;
pub mod job_feed;
pub mod jobs;
pub mod jwks;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod parquet_export;
pub mod reads;
pub mod redact;
pub mod routes;
pub mod scheduler;
pub mod schedules;
pub mod sql;
pub mod startup;
pub mod state;
pub mod store;
pub mod stream;
pub mod stream_slots;
#[cfg(test)]
mod test_support;

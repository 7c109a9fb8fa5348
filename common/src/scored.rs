//! A scored event: the row the processor writes to ClickHouse, the record it
//! publishes on the results topic, and what the query-api returns.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Name of the ClickHouse table holding scored events.
pub const EVENTS_TABLE: &str = "events";

#[derive(
    Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row, utoipa::ToSchema,
)]
pub struct ScoredEvent {
    pub tenant_id: String,
    pub source_id: String,
    pub event_id: String,
    /// `telemetry` or `app`.
    #[schema(value_type = String)]
    pub kind: Arc<str>,
    /// Seconds since the epoch (ClickHouse DateTime).
    pub event_time: u32,
    pub event_time_ms: i64,
    /// Registry id of the schema the producer wrote with.
    pub schema_id: u32,
    pub reading_names: Vec<String>,
    pub reading_values: Vec<f64>,
    pub event_type: String,
    /// App event properties as a JSON object.
    pub properties_json: String,
    pub firmware_version: String,
    /// Anomaly score from the model; 0 for events that are not scored.
    pub score: f32,
    pub is_anomaly: u8,
    #[schema(value_type = String)]
    pub model_version: Arc<str>,
    /// The event's position in its device's sequence, from 1; retries of an
    /// event are not counted.
    pub device_seq: u64,
    /// The device-history features computed for the event (EWMA mean,
    /// z-score and delta of each reading, seconds since the previous event),
    /// names and values side by side; a feature without a value yet is left out.
    /// The names are shared: the same dozen serve every event.
    #[schema(value_type = Vec<String>)]
    pub feature_names: Vec<Arc<str>>,
    pub feature_values: Vec<f64>,
    pub processed_ms: i64,
    /// Where the event was read from: replays are recognised by offset.
    #[schema(value_type = String)]
    pub source_topic: Arc<str>,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// An anomaly alert: published on the alerts topic for each event the model
/// flags, small enough for paging and ticketing consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub tenant_id: String,
    pub source_id: String,
    pub event_id: String,
    pub event_time_ms: i64,
    pub score: f32,
    /// The model's threshold the score exceeded.
    pub threshold: f32,
    pub model_version: Arc<str>,
    pub reading_names: Vec<String>,
    pub reading_values: Vec<f64>,
}

impl Alert {
    /// The alert for a flagged row; None when the row is not an anomaly.
    pub fn for_row(row: &ScoredEvent, threshold: f32) -> Option<Self> {
        (row.is_anomaly == 1).then(|| Self {
            tenant_id: row.tenant_id.clone(),
            source_id: row.source_id.clone(),
            event_id: row.event_id.clone(),
            event_time_ms: row.event_time_ms,
            score: row.score,
            threshold,
            model_version: row.model_version.clone(),
            reading_names: row.reading_names.clone(),
            reading_values: row.reading_values.clone(),
        })
    }
}

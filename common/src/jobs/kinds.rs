//! The kinds of job and their parameters, checked where a job is submitted
//! and read again where it runs.

use serde::{Deserialize, Serialize};

/// Latest time a report may name: the largest `DateTime` ClickHouse stores.
pub const MAX_TIME_MS: i64 = 4_294_967_295_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A tenant's events over a time range, as one file.
    Report,
}

impl JobKind {
    pub const ALL: [JobKind; 1] = [JobKind::Report];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Report => "report",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the kind reads files given as inputs.
    pub fn takes_inputs(self) -> bool {
        match self {
            JobKind::Report => false,
        }
    }
}

/// What is wrong with a job's parameters: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

/// The file format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// The columns of `/v1/export?format=csv`, byte for byte.
    Csv,
    /// The columns of `/v1/export?format=parquet`, byte for byte.
    Parquet,
}

impl ReportFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ReportFormat::Csv => "text/csv",
            ReportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A report's parameters: the tenant's events in `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    pub format: ReportFormat,
    /// Start of the range, milliseconds since the epoch.
    #[schema(minimum = 0, maximum = 4294967295999_i64)]
    pub from_ms: i64,
    /// End of the range, exclusive. A range that ends before it starts is
    /// empty, as `/v1/export`'s is.
    #[schema(minimum = 0, maximum = 4294967295999_i64)]
    pub to_ms: i64,
    /// Only this source (device); no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub source_id: Option<String>,
}

impl ReportParams {
    /// `params` as a report's, or what is wrong with them.
    pub fn parse(params: &serde_json::Value) -> Result<Self, Invalid> {
        let mut params = params.clone();
        // JSON's integers may be written with a zero fraction (`5.0`).
        for key in ["from_ms", "to_ms"] {
            if let Some(v) = params.get_mut(key) {
                let integral = v.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15);
                if let (Some(f), false) = (integral, v.is_i64()) {
                    *v = serde_json::Value::from(f as i64);
                }
            }
        }
        let p: ReportParams = serde_json::from_value(params).map_err(|e| Invalid {
            field: "params",
            reason: e.to_string(),
        })?;
        for (field, ms) in [("params.from_ms", p.from_ms), ("params.to_ms", p.to_ms)] {
            if !(0..=MAX_TIME_MS).contains(&ms) {
                return Err(Invalid {
                    field,
                    reason: format!(
                        "must be between 0 and {MAX_TIME_MS} (milliseconds since the epoch)"
                    ),
                });
            }
        }
        if let Some(source) = p.source_id.as_deref() {
            // Ingest takes no such id, so a filter on one could only match
            // nothing; a NUL would also end the id in C clients' hands.
            let why = if source.is_empty() || source.len() > 256 {
                Some("must be 1 to 256 bytes")
            } else if source.chars().any(char::is_control) {
                Some("must not hold control characters (NUL among them)")
            } else {
                None
            };
            if let Some(reason) = why {
                return Err(Invalid {
                    field: "params.source_id",
                    reason: reason.into(),
                });
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(v: serde_json::Value) -> &'static str {
        ReportParams::parse(&v).unwrap_err().field
    }

    #[test]
    fn report_parameters_are_checked_field_by_field() {
        let ok = ReportParams::parse(&json!({"format": "csv", "from_ms": 0, "to_ms": 10})).unwrap();
        assert_eq!(
            (ok.format, ok.from_ms, ok.to_ms),
            (ReportFormat::Csv, 0, 10)
        );
        assert_eq!(
            field_of(json!({"format": "xlsx", "from_ms": 0, "to_ms": 1})),
            "params"
        );
        assert_eq!(field_of(json!({"format": "csv", "from_ms": 0})), "params");
        assert_eq!(
            field_of(json!({"format": "csv", "from_ms": 0, "to_ms": 1, "x": 1})),
            "params"
        );
        assert_eq!(
            field_of(json!({"format": "csv", "from_ms": -1, "to_ms": 1})),
            "params.from_ms"
        );
        let huge = json!({"format": "csv", "from_ms": 0, "to_ms": MAX_TIME_MS + 1});
        assert_eq!(field_of(huge), "params.to_ms");
        let blank = json!({"format": "parquet", "from_ms": 0, "to_ms": 1, "source_id": ""});
        assert_eq!(field_of(blank), "params.source_id");
        for control in ["a\u{0}b", "line\nbreak", "\u{7f}", "\u{9f}"] {
            let bad = json!({"format": "csv", "from_ms": 0, "to_ms": 1, "source_id": control});
            assert_eq!(field_of(bad), "params.source_id", "{control:?}");
        }
        assert_eq!(field_of(json!("csv")), "params");
        assert_eq!(JobKind::parse("report"), Some(JobKind::Report));
        assert_eq!(JobKind::parse("ocr"), None);
    }
}

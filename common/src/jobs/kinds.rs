//! The kinds of job and their parameters, checked where a job is submitted
//! and read again where it runs.

use serde::{Deserialize, Serialize};

/// Most snapshots one OCR job reads.
pub const MAX_OCR_INPUTS: usize = 1000;
/// Longest meter-value pattern, in bytes.
const MAX_PATTERN_BYTES: usize = 256;
/// The reading an OCR job's meter values are published as by default.
const DEFAULT_READING: &str = "meter_value";
/// A meter's reading by default: a line that is only a number, such as
/// `012345.67`.
const DEFAULT_VALUE_PATTERN: &str = r"^\s*(\d{1,12}(?:[.,]\d{1,6})?)\s*$";

/// Latest time a report may name: the largest `DateTime` ClickHouse stores.
pub const MAX_TIME_MS: i64 = 4_294_967_295_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A tenant's events over a time range, as one file.
    Report,
    /// The text on snapshots (JPEG or PNG files), and meter readings in it.
    Ocr,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Report, JobKind::Ocr];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Report => "report",
            JobKind::Ocr => "ocr",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the kind reads files given as inputs.
    pub fn takes_inputs(self) -> bool {
        self.max_inputs() > 0
    }

    /// Most input files a job of the kind reads.
    pub fn max_inputs(self) -> usize {
        match self {
            JobKind::Report => 0,
            JobKind::Ocr => MAX_OCR_INPUTS,
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
        check_source(p.source_id.as_deref())?;
        Ok(p)
    }
}

/// A source id as ingest takes one: ingest takes no other, so a filter on
/// one could only match nothing, and a NUL would end the id in C clients'
/// hands.
fn check_source(source: Option<&str>) -> Result<(), Invalid> {
    let Some(source) = source else {
        return Ok(());
    };
    let why = if source.is_empty() || source.len() > 256 {
        Some("must be 1 to 256 bytes")
    } else if source.chars().any(char::is_control) {
        Some("must not hold control characters (NUL among them)")
    } else {
        None
    };
    match why {
        Some(reason) => Err(Invalid {
            field: "params.source_id",
            reason: reason.into(),
        }),
        None => Ok(()),
    }
}

/// An OCR job's parameters; every one may be left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OcrParams {
    /// The device the snapshots are of: each meter value read becomes a
    /// telemetry event of this source. Without it, nothing is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]+$"
    )]
    pub source_id: Option<String>,
    /// A regular expression matched against each line read; the first
    /// line that matches is the meter value (its first group, or the whole
    /// match), a comma read as a decimal point. By default a line that is
    /// only a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, format = Regex)]
    pub value_pattern: Option<String>,
    /// The reading the value is published as (default `meter_value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
    )]
    pub reading: Option<String>,
}

impl OcrParams {
    /// `params` as an OCR job's, or what is wrong with them.
    pub fn parse(params: &serde_json::Value) -> Result<Self, Invalid> {
        let params = if params.is_null() {
            serde_json::json!({})
        } else {
            params.clone()
        };
        let p: OcrParams = serde_json::from_value(params).map_err(|e| Invalid {
            field: "params",
            reason: e.to_string(),
        })?;
        check_source(p.source_id.as_deref())?;
        if let Some(pattern) = p.value_pattern.as_deref() {
            if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
                return Err(Invalid {
                    field: "params.value_pattern",
                    reason: format!("must be 1 to {MAX_PATTERN_BYTES} bytes"),
                });
            }
            value_pattern(pattern).map_err(|e| Invalid {
                field: "params.value_pattern",
                reason: format!("not a regular expression: {e}"),
            })?;
        }
        if let Some(reading) = p.reading.as_deref() {
            let named = reading.len() <= 64
                && reading
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && reading
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !named {
                return Err(Invalid {
                    field: "params.reading",
                    reason:
                        "must be 1 to 64 letters, digits or underscores, not starting with a digit"
                            .into(),
                });
            }
        }
        Ok(p)
    }

    /// The compiled meter-value pattern.
    pub fn pattern(&self) -> Result<regex::Regex, regex::Error> {
        value_pattern(
            self.value_pattern
                .as_deref()
                .unwrap_or(DEFAULT_VALUE_PATTERN),
        )
    }

    pub fn reading(&self) -> &str {
        self.reading.as_deref().unwrap_or(DEFAULT_READING)
    }
}

/// A pattern compiled with a size bound, so that no pattern can make the
/// worker build a huge automaton.
fn value_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
}

/// The meter value in `lines`: the first line `pattern` matches, read as
/// a finite number.
pub fn meter_value<'a>(
    pattern: &regex::Regex,
    lines: impl IntoIterator<Item = &'a str>,
) -> Option<f64> {
    lines.into_iter().find_map(|line| {
        let found = pattern.captures(line)?;
        let text = found.get(1).or_else(|| found.get(0))?.as_str();
        let value: f64 = text.trim().replace(',', ".").parse().ok()?;
        value.is_finite().then_some(value)
    })
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
        assert_eq!(JobKind::parse("ocr"), Some(JobKind::Ocr));
        assert_eq!(JobKind::parse("OCR"), None);
    }

    #[test]
    fn ocr_parameters_are_checked_field_by_field() {
        let fail = |v: serde_json::Value| OcrParams::parse(&v).unwrap_err().field;
        let none = OcrParams::parse(&serde_json::Value::Null).unwrap();
        assert_eq!(
            (none.reading(), none.source_id.as_deref()),
            ("meter_value", None)
        );
        let ok = OcrParams::parse(&json!({"source_id": "cam-1", "reading": "kwh"})).unwrap();
        assert_eq!(ok.reading(), "kwh");
        assert_eq!(fail(json!({"source_id": "cam\u{0}1"})), "params.source_id");
        assert_eq!(
            fail(json!({"value_pattern": "(unclosed"})),
            "params.value_pattern"
        );
        assert_eq!(
            fail(json!({"value_pattern": "a".repeat(257)})),
            "params.value_pattern"
        );
        // A pattern whose automaton would be huge is refused, not built.
        assert_eq!(
            fail(json!({"value_pattern": "\\w{1000}\\w{1000}"})),
            "params.value_pattern"
        );
        assert_eq!(fail(json!({"reading": "1st"})), "params.reading");
        assert_eq!(fail(json!({"reading": "a b"})), "params.reading");
        assert_eq!(fail(json!({"colour": "red"})), "params");
        assert_eq!(fail(json!([1])), "params");
    }

    #[test]
    fn the_meter_value_is_the_first_line_that_is_a_number() {
        let p = OcrParams::default().pattern().unwrap();
        let lines = ["METER 04-1187", "012345.67", "kWh SN A7X-99310"];
        assert_eq!(meter_value(&p, lines), Some(12345.67));
        assert_eq!(meter_value(&p, ["0042,5"]), Some(42.5));
        assert_eq!(meter_value(&p, ["kWh", "SN 123-4"]), None);
        let custom = OcrParams {
            value_pattern: Some(r"SN (\d+)".into()),
            ..OcrParams::default()
        };
        assert_eq!(
            meter_value(&custom.pattern().unwrap(), ["x SN 99310"]),
            Some(99310.0)
        );
        // A number too long for a float is still finite; "inf" never matches.
        assert_eq!(meter_value(&p, ["inf", "NaN"]), None);
    }
}

//! Compatibility levels as the Confluent Schema Registry defines them, checked
//! with Avro's schema resolution rules.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    /// A new schema can read data written with the latest registered one.
    #[default]
    Backward,
    /// ... with every registered one.
    BackwardTransitive,
    /// Data written with a new schema can be read with the latest registered one.
    Forward,
    ForwardTransitive,
    /// Both backward and forward.
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Checks `candidate` against a subject's live versions, oldest first.
    /// Returns one message per violation; empty means compatible.
    pub fn violations(self, candidate: &Schema, existing: &[&Schema]) -> Vec<String> {
        let against: &[&Schema] = if self.transitive() {
            existing
        } else {
            existing.last().map(std::slice::from_ref).unwrap_or(&[])
        };
        let mut messages = Vec::new();
        for (i, old) in against.iter().enumerate() {
            let which = if self.transitive() {
                format!("version {} of {}", i + 1, against.len())
            } else {
                "the latest version".to_string()
            };
            if self.backward() {
                if let Some(why) = cannot_read(old, candidate) {
                    messages.push(format!(
                        "the new schema cannot read data written with {which}: {why}"
                    ));
                }
            }
            if self.forward() {
                if let Some(why) = cannot_read(candidate, old) {
                    messages.push(format!(
                        "{which} cannot read data written with the new schema: {why}"
                    ));
                }
            }
        }
        messages
    }
}

/// Why `reader` cannot always read what `writer` wrote, if it cannot.
fn cannot_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(_) => Some("only some values resolve (a union branch or enum symbol is missing)".into()),
        Err(e) => Some(e.to_string()),
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
            .map_err(|_| format!("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive; got '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("test schema parses")
    }

    #[test]
    fn adding_an_optional_field_is_full_compatible() {
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(
            r#"{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}"#,
        );
        for level in [
            CompatibilityLevel::Backward,
            CompatibilityLevel::Forward,
            CompatibilityLevel::FullTransitive,
        ] {
            assert_eq!(
                level.violations(&v2, &[&v1]),
                Vec::<String>::new(),
                "{level}"
            );
        }
    }

    #[test]
    fn adding_a_required_field_breaks_backward_but_not_forward() {
        let v1 = record(r#"{"name":"a","type":"long"}"#);
        let v2 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        assert_eq!(
            CompatibilityLevel::Backward.violations(&v2, &[&v1]).len(),
            1
        );
        assert!(CompatibilityLevel::Forward
            .violations(&v2, &[&v1])
            .is_empty());
        assert_eq!(CompatibilityLevel::Full.violations(&v2, &[&v1]).len(), 1);
        assert!(CompatibilityLevel::None.violations(&v2, &[&v1]).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_version_others_only_the_latest() {
        // v1 has `b` without a default, v2 drops it, v3 adds it back as a long:
        // v3 reads v2 data (b gets its default) but cannot read v1's string `b`.
        let v1 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"string"}"#);
        let v2 = record(r#"{"name":"a","type":"long"}"#);
        let v3 = record(r#"{"name":"a","type":"long"},{"name":"b","type":"long","default":0}"#);
        assert!(CompatibilityLevel::Backward
            .violations(&v3, &[&v1, &v2])
            .is_empty());
        let transitive = CompatibilityLevel::BackwardTransitive.violations(&v3, &[&v1, &v2]);
        assert_eq!(transitive.len(), 1, "{transitive:?}");
        assert!(transitive[0].contains("version 1 of 2"), "{transitive:?}");
    }

    #[test]
    fn levels_parse_case_insensitively_and_reject_unknown_names() {
        assert_eq!(
            "full_transitive".parse::<CompatibilityLevel>(),
            Ok(CompatibilityLevel::FullTransitive)
        );
        assert_eq!(
            "BACKWARD".parse::<CompatibilityLevel>(),
            Ok(CompatibilityLevel::Backward)
        );
        assert!("sideways".parse::<CompatibilityLevel>().is_err());
    }
}

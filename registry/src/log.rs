//! The registry's log codec: how each change to the state is written as a
//! record of the compacted Kafka topic (its key and JSON value, or a
//! tombstone), in the layout Confluent's registry uses, and read back.

use serde::{Deserialize, Serialize};

use crate::compat::CompatibilityLevel;

/// Key of a log record. Compaction keeps the newest record per key, which is
/// all the state needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecordKey {
    Schema {
        subject: String,
        version: u32,
    },
    Config {
        subject: Option<String>,
    },
    /// One per registry instance: its latest barrier token.
    Barrier {
        writer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: CompatibilityLevel,
}

/// One change to the state, as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    PutSchema(SchemaRecord),
    /// Permanent deletion of one version (a tombstone).
    RemoveSchema {
        subject: String,
        version: u32,
    },
    PutConfig {
        subject: Option<String>,
        level: CompatibilityLevel,
    },
    RemoveConfig {
        subject: Option<String>,
    },
    /// Marks a point in the log: once an instance reads its own barrier back,
    /// it has applied everything committed before it.
    Barrier {
        writer: String,
        token: u64,
    },
}

impl Change {
    /// The record's key and value (None for a tombstone) as JSON bytes.
    pub fn to_record(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let (key, value) = match self {
            Change::PutSchema(r) => (
                RecordKey::Schema {
                    subject: r.subject.clone(),
                    version: r.version,
                },
                serde_json::to_vec(r).ok(),
            ),
            Change::RemoveSchema { subject, version } => (
                RecordKey::Schema {
                    subject: subject.clone(),
                    version: *version,
                },
                None,
            ),
            Change::PutConfig { subject, level } => (
                RecordKey::Config {
                    subject: subject.clone(),
                },
                serde_json::to_vec(&ConfigRecord {
                    compatibility_level: *level,
                })
                .ok(),
            ),
            Change::RemoveConfig { subject } => (
                RecordKey::Config {
                    subject: subject.clone(),
                },
                None,
            ),
            Change::Barrier { writer, token } => (
                RecordKey::Barrier {
                    writer: writer.clone(),
                },
                Some(token.to_string().into_bytes()),
            ),
        };
        // Serializing these plain structs cannot fail.
        (serde_json::to_vec(&key).unwrap_or_default(), value)
    }

    pub fn from_record(key: &[u8], value: Option<&[u8]>) -> Result<Self, serde_json::Error> {
        Ok(match (serde_json::from_slice::<RecordKey>(key)?, value) {
            (RecordKey::Schema { .. }, Some(v)) => Change::PutSchema(serde_json::from_slice(v)?),
            (RecordKey::Schema { subject, version }, None) => {
                Change::RemoveSchema { subject, version }
            }
            (RecordKey::Config { subject }, Some(v)) => Change::PutConfig {
                subject,
                level: serde_json::from_slice::<ConfigRecord>(v)?.compatibility_level,
            },
            (RecordKey::Config { subject }, None) => Change::RemoveConfig { subject },
            (RecordKey::Barrier { writer }, v) => Change::Barrier {
                writer,
                token: v
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_bytes() {
        let changes = [
            Change::PutSchema(SchemaRecord {
                subject: "s".into(),
                version: 3,
                id: 7,
                schema: r#"{"type": "string"}"#.into(),
                deleted: false,
            }),
            Change::RemoveSchema {
                subject: "s".into(),
                version: 3,
            },
            Change::PutConfig {
                subject: None,
                level: CompatibilityLevel::FullTransitive,
            },
            Change::RemoveConfig {
                subject: Some("s".into()),
            },
            Change::Barrier {
                writer: "w1".into(),
                token: 42,
            },
        ];
        for c in changes {
            let (k, v) = c.to_record();
            assert_eq!(Change::from_record(&k, v.as_deref()).expect("parses"), c);
        }
    }
}

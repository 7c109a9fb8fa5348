//! Avro encoding in the Confluent wire format, with every shipped schema
//! version registered under its topic's subject.

use std::collections::HashMap;

use pulse_common::config::Topics;
use pulse_common::schemas::EventKind;
use schema_registry_converter::async_impl::avro::AvroEncoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use super::parse::{Payload, ValidEvent};

/// A shipped schema version and the id the registry gave it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub kind: EventKind,
    pub version: u32,
    pub subject: String,
    pub id: u32,
}

/// One encoder per (kind, version): the converter caches the schema id per
/// subject, and every version of a kind shares its topic's subject.
pub struct Encoders {
    by_version: HashMap<(EventKind, u32), (AvroEncoder, SubjectNameStrategy)>,
    /// The registry's id of every shipped schema version, once registered.
    known_ids: HashMap<u32, (EventKind, u32)>,
}

impl Encoders {
    pub fn new(registry_url: &str, topics: &Topics) -> anyhow::Result<Self> {
        let mut by_version = HashMap::new();
        for kind in EventKind::ALL {
            let topic = topics.events(kind);
            for version in 1..=kind.latest_version() {
                let text = kind
                    .schema_text(version)
                    .ok_or_else(|| anyhow::anyhow!("{kind:?} v{version} is not shipped"))?;
                let settings = SrSettings::new_builder(registry_url.to_string())
                    .no_proxy()
                    .build()?;
                let strategy = SubjectNameStrategy::TopicNameStrategyWithSchema(
                    topic.clone(),
                    false,
                    SuppliedSchema::new(None, SchemaType::Avro, text.to_string()),
                );
                by_version.insert((kind, version), (AvroEncoder::new(settings), strategy));
            }
        }
        Ok(Self {
            by_version,
            known_ids: HashMap::new(),
        })
    }

    /// The kind and version of a registry schema id this gateway accepts.
    pub fn known_schema(&self, id: u32) -> Option<(EventKind, u32)> {
        self.known_ids.get(&id).copied()
    }

    /// Registers every version, oldest first, so the registry's version
    /// numbers match Pulse's and each is checked for compatibility with the
    /// one before. The gateway accepts a pre-encoded record once its schema
    /// id was [`Self::accept`]ed.
    pub async fn register_all(&self) -> anyhow::Result<Vec<Registered>> {
        let mut registered = Vec::new();
        for kind in EventKind::ALL {
            for version in 1..=kind.latest_version() {
                let (encoder, strategy) = &self.by_version[&(kind, version)];
                let subject = strategy.get_subject()?;
                let schema = encoder
                    .get_schema_and_id(&subject, strategy.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("registering {subject} v{version}: {e}"))?;
                registered.push(Registered {
                    kind,
                    version,
                    subject,
                    id: schema.id,
                });
            }
        }
        Ok(registered)
    }

    /// Accepts records of the schemas [`Self::register_all`] registered.
    pub fn accept(&mut self, registered: &[Registered]) {
        for r in registered {
            self.known_ids.insert(r.id, (r.kind, r.version));
        }
    }

    pub async fn encode(&self, event: &ValidEvent) -> anyhow::Result<Vec<u8>> {
        let value = match &event.payload {
            Payload::Encoded(bytes) => return Ok(bytes.clone()),
            Payload::Value(v) => v,
        };
        let (encoder, strategy) = self
            .by_version
            .get(&(event.kind, event.schema_version))
            .ok_or_else(|| {
                anyhow::anyhow!("no encoder for {:?} v{}", event.kind, event.schema_version)
            })?;
        encoder
            .encode_value(value.clone(), strategy)
            .await
            .map_err(|e| anyhow::anyhow!("encoding event {}: {e}", event.event_id))
    }
}

//! The Avro schemas of Pulse's events, built into every binary from
//! `schemas/avro/`. A kind's versions are listed oldest first; version N is
//! registered as the subject's N-th version.

use apache_avro::Schema;

const TELEMETRY_V1: &str = include_str!("../../schemas/avro/telemetry-v1.avsc");
const TELEMETRY_V2: &str = include_str!("../../schemas/avro/telemetry-v2.avsc");
const APP_EVENT_V1: &str = include_str!("../../schemas/avro/app-event-v1.avsc");

/// The kinds of event Pulse takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Numeric readings from a device.
    Telemetry,
    /// A typed event with properties from an app.
    App,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Telemetry, EventKind::App];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Telemetry => "telemetry",
            EventKind::App => "app",
        }
    }

    /// The name, shared: every scored row carries it.
    pub fn shared_name(self) -> std::sync::Arc<str> {
        static NAMES: std::sync::OnceLock<[std::sync::Arc<str>; 2]> = std::sync::OnceLock::new();
        let names = NAMES.get_or_init(|| EventKind::ALL.map(|k| k.as_str().into()));
        names[self as usize].clone()
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub(crate) fn topic_suffix(self) -> &'static str {
        match self {
            EventKind::Telemetry => "telemetry",
            EventKind::App => "app-events",
        }
    }

    /// The schema texts of every version, oldest first.
    pub fn schema_texts(self) -> &'static [&'static str] {
        match self {
            EventKind::Telemetry => &[TELEMETRY_V1, TELEMETRY_V2],
            EventKind::App => &[APP_EVENT_V1],
        }
    }

    pub fn latest_version(self) -> u32 {
        self.schema_texts().len() as u32
    }

    /// The text of schema `version` (1-based), if Pulse ships it.
    pub fn schema_text(self, version: u32) -> Option<&'static str> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.schema_texts().get(index).copied()
    }

    /// The parsed schema `version`, if Pulse ships it.
    pub fn schema(self, version: u32) -> Option<Schema> {
        // The shipped texts are checked by a unit test, so parsing cannot fail at run time.
        self.schema_text(version)
            .and_then(|text| Schema::parse_str(text).ok())
    }
}

/// The registry subject of a topic's record values (Confluent's TopicNameStrategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema_compatibility::SchemaCompatibility;

    #[test]
    fn shared_names_are_the_kinds_names_made_once() {
        for kind in EventKind::ALL {
            assert_eq!(&*kind.shared_name(), kind.as_str());
            assert!(std::sync::Arc::ptr_eq(
                &kind.shared_name(),
                &kind.shared_name()
            ));
        }
    }

    #[test]
    fn every_shipped_schema_parses() {
        for kind in EventKind::ALL {
            for v in 1..=kind.latest_version() {
                assert!(kind.schema(v).is_some(), "{kind:?} v{v}");
            }
            assert!(kind.schema(0).is_none());
            assert!(kind.schema(kind.latest_version() + 1).is_none());
        }
    }

    #[test]
    fn telemetry_v2_and_v1_read_each_other() {
        let v1 = EventKind::Telemetry.schema(1).expect("v1");
        let v2 = EventKind::Telemetry.schema(2).expect("v2");
        assert!(SchemaCompatibility::mutual_read(&v1, &v2).is_ok());
    }

    #[test]
    fn kind_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("video"), None);
    }
}

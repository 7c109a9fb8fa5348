//! The registry's state machine, a deterministic function of its log: every
//! change is a record in a compacted Kafka topic (`crate::log`), and each
//! instance replays the log in order to build the same state. Planning a
//! change reads the state and returns the records to append; applying them
//! happens when they are read back from the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;

use crate::compat::CompatibilityLevel;
use crate::error::RegistryError;
use crate::limits::Limits;
use crate::log::{Change, SchemaRecord};
use crate::version::VersionSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionEntry {
    pub version: u32,
    pub id: u32,
    pub deleted: bool,
}

#[derive(Debug)]
pub struct StoredSchema {
    /// The text as first registered, returned to clients unchanged.
    pub text: String,
    pub parsed: Schema,
    canonical: String,
}

/// What a registration resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: u32,
    pub version: u32,
    /// The records to append; empty when the schema was already registered.
    pub changes: Vec<Change>,
}

#[derive(Debug)]
pub struct RegistryState {
    subjects: BTreeMap<String, BTreeMap<u32, VersionEntry>>,
    schemas: HashMap<u32, Arc<StoredSchema>>,
    ids_by_canonical: HashMap<String, u32>,
    max_id: u32,
    default_level: CompatibilityLevel,
    global_level: Option<CompatibilityLevel>,
    subject_levels: HashMap<String, CompatibilityLevel>,
    barriers: HashMap<String, u64>,
    limits: Limits,
}

/// Why a log record was not applied. The state stays what it was; the
/// record's id still counts as used, so it is never handed out again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skipped {
    #[error("schema {id} of subject '{subject}' is {bytes} bytes, over the limit of {limit}")]
    Oversize {
        id: u32,
        subject: String,
        bytes: usize,
        limit: usize,
    },
    #[error("subject '{subject}' would exceed the limit of {limit} subjects")]
    TooManySubjects { subject: String, limit: usize },
    #[error("subject '{subject}' would exceed the limit of {limit} versions")]
    TooManyVersions { subject: String, limit: usize },
    #[error("schema {id} of subject '{subject}' does not parse: {why}")]
    Unparsable {
        id: u32,
        subject: String,
        why: String,
    },
}

impl Skipped {
    /// The label of `pulse_registry_log_records_skipped_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Skipped::Oversize { .. } => "oversize",
            Skipped::TooManySubjects { .. } => "too_many_subjects",
            Skipped::TooManyVersions { .. } => "too_many_versions",
            Skipped::Unparsable { .. } => "unparsable",
        }
    }
}

pub fn parse_schema(text: &str) -> Result<(Schema, String), RegistryError> {
    let parsed = Schema::parse_str(text).map_err(RegistryError::invalid_schema)?;
    let canonical = parsed.canonical_form();
    Ok((parsed, canonical))
}

impl RegistryState {
    pub fn new(default_level: CompatibilityLevel) -> Self {
        Self {
            subjects: BTreeMap::new(),
            schemas: HashMap::new(),
            ids_by_canonical: HashMap::new(),
            max_id: 0,
            default_level,
            global_level: None,
            subject_levels: HashMap::new(),
            barriers: HashMap::new(),
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether `subject` may gain a version: the same rule for planning a
    /// registration and for replaying one, so the log and the state agree.
    fn check_room(&self, subject: &str) -> Result<(), Skipped> {
        match self.subjects.get(subject) {
            None if self.subjects.len() >= self.limits.max_subjects => {
                Err(Skipped::TooManySubjects {
                    subject: subject.to_string(),
                    limit: self.limits.max_subjects,
                })
            }
            Some(vs) if vs.len() >= self.limits.max_versions_per_subject => {
                Err(Skipped::TooManyVersions {
                    subject: subject.to_string(),
                    limit: self.limits.max_versions_per_subject,
                })
            }
            _ => Ok(()),
        }
    }

    /// Applies one record read from the log. A record that cannot be
    /// applied (a schema that no longer parses, or one over the limits) is
    /// skipped rather than stopping the registry; the caller logs and
    /// counts it.
    pub fn apply(&mut self, change: Change) -> Result<(), Skipped> {
        match change {
            Change::PutSchema(r) => {
                self.max_id = self.max_id.max(r.id);
                if r.schema.len() > self.limits.max_schema_bytes {
                    return Err(Skipped::Oversize {
                        id: r.id,
                        subject: r.subject,
                        bytes: r.schema.len(),
                        limit: self.limits.max_schema_bytes,
                    });
                }
                let known_version = self
                    .subjects
                    .get(&r.subject)
                    .is_some_and(|vs| vs.contains_key(&r.version));
                if !known_version {
                    self.check_room(&r.subject)?;
                }
                if !self.schemas.contains_key(&r.id) {
                    match parse_schema(&r.schema) {
                        Ok((parsed, canonical)) => {
                            self.ids_by_canonical.insert(canonical.clone(), r.id);
                            self.schemas.insert(
                                r.id,
                                Arc::new(StoredSchema {
                                    text: r.schema,
                                    parsed,
                                    canonical,
                                }),
                            );
                        }
                        Err(e) => {
                            return Err(Skipped::Unparsable {
                                id: r.id,
                                subject: r.subject,
                                why: e.message,
                            })
                        }
                    }
                }
                self.subjects.entry(r.subject).or_default().insert(
                    r.version,
                    VersionEntry {
                        version: r.version,
                        id: r.id,
                        deleted: r.deleted,
                    },
                );
            }
            Change::RemoveSchema { subject, version } => {
                let Some(versions) = self.subjects.get_mut(&subject) else {
                    return Ok(());
                };
                let removed = versions.remove(&version);
                if versions.is_empty() {
                    self.subjects.remove(&subject);
                }
                if let Some(entry) = removed {
                    self.forget_unused_schema(entry.id);
                }
            }
            Change::PutConfig {
                subject: None,
                level,
            } => self.global_level = Some(level),
            Change::PutConfig {
                subject: Some(s),
                level,
            } => {
                self.subject_levels.insert(s, level);
            }
            Change::RemoveConfig { subject: None } => self.global_level = None,
            Change::RemoveConfig { subject: Some(s) } => {
                self.subject_levels.remove(&s);
            }
            Change::Barrier { writer, token } => {
                self.barriers.insert(writer, token);
            }
        }
        Ok(())
    }

    fn forget_unused_schema(&mut self, id: u32) {
        let used = self
            .subjects
            .values()
            .any(|vs| vs.values().any(|e| e.id == id));
        if !used {
            if let Some(s) = self.schemas.remove(&id) {
                self.ids_by_canonical.remove(&s.canonical);
            }
        }
    }

    /// The latest barrier token `writer` has committed and this state applied.
    pub fn barrier(&self, writer: &str) -> Option<u64> {
        self.barriers.get(writer).copied()
    }

    pub fn global_level(&self) -> CompatibilityLevel {
        self.global_level.unwrap_or(self.default_level)
    }

    pub fn subject_level(&self, subject: &str) -> Option<CompatibilityLevel> {
        self.subject_levels.get(subject).copied()
    }

    pub fn effective_level(&self, subject: &str) -> CompatibilityLevel {
        self.subject_level(subject)
            .unwrap_or_else(|| self.global_level())
    }

    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, vs)| include_deleted || vs.values().any(|e| !e.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    fn entries(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<VersionEntry>, RegistryError> {
        let entries: Vec<_> = self
            .subjects
            .get(subject)
            .map(|vs| {
                vs.values()
                    .filter(|e| include_deleted || !e.deleted)
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if entries.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(entries)
    }

    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        Ok(self
            .entries(subject, include_deleted)?
            .iter()
            .map(|e| e.version)
            .collect())
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<(VersionEntry, Arc<StoredSchema>), RegistryError> {
        let entries = self.entries(subject, include_deleted)?;
        let entry = match spec {
            VersionSpec::Latest => entries.last().copied(),
            VersionSpec::Number(n) => entries.iter().find(|e| e.version == n).copied(),
        }
        .ok_or_else(|| {
            RegistryError::version_not_found(
                subject,
                &match spec {
                    VersionSpec::Latest => "latest".to_string(),
                    VersionSpec::Number(n) => n.to_string(),
                },
            )
        })?;
        let schema = self
            .schema(entry.id)
            .ok_or_else(RegistryError::schema_not_found)?;
        Ok((entry, schema))
    }

    pub fn schema(&self, id: u32) -> Option<Arc<StoredSchema>> {
        self.schemas.get(&id).cloned()
    }

    /// Every (subject, version) registered with schema `id`.
    pub fn usages(&self, id: u32, include_deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.values()
                    .filter(move |e| e.id == id && (include_deleted || !e.deleted))
                    .map(move |e| (s.clone(), e.version))
            })
            .collect()
    }

    /// The live version of `subject` whose schema equals `text`, if any.
    pub fn lookup(
        &self,
        subject: &str,
        text: &str,
        include_deleted: bool,
    ) -> Result<(VersionEntry, Arc<StoredSchema>), RegistryError> {
        let entries = self.entries(subject, include_deleted)?;
        let (_, canonical) = parse_schema(text)?;
        entries
            .iter()
            .rev()
            .find_map(|e| {
                let s = self.schemas.get(&e.id)?;
                (s.canonical == canonical).then(|| (*e, s.clone()))
            })
            .ok_or_else(RegistryError::schema_not_found)
    }

    /// Checks `text` against the subject's live versions under `level`.
    pub fn compatibility_violations(
        &self,
        subject: &str,
        text: &str,
        against: Option<VersionSpec>,
    ) -> Result<Vec<String>, RegistryError> {
        let (candidate, _) = parse_schema(text)?;
        let level = self.effective_level(subject);
        let live = self.subjects.get(subject).map(|vs| {
            vs.values()
                .filter(|e| !e.deleted)
                .filter_map(|e| self.schemas.get(&e.id).map(|s| (e.version, s.clone())))
                .collect::<Vec<_>>()
        });
        let live = live.unwrap_or_default();
        let chosen: Vec<&Schema> = match against {
            None => live.iter().map(|(_, s)| &s.parsed).collect(),
            Some(spec) => {
                let (entry, _) = self.version(subject, spec, false)?;
                live.iter()
                    .filter(|(v, _)| *v <= entry.version)
                    .map(|(_, s)| &s.parsed)
                    .collect()
            }
        };
        Ok(level.violations(&candidate, &chosen))
    }

    /// Plans registering `text` under `subject`: the same id for a schema
    /// already known anywhere, a new version unless the subject already has it.
    pub fn plan_register(&self, subject: &str, text: &str) -> Result<Registered, RegistryError> {
        self.limits.check_schema(text)?;
        let (_, canonical) = parse_schema(text)?;
        if let Ok((entry, _)) = self.lookup(subject, text, false) {
            return Ok(Registered {
                id: entry.id,
                version: entry.version,
                changes: vec![],
            });
        }
        self.check_room(subject).map_err(|skipped| match skipped {
            Skipped::TooManySubjects { limit, .. } => RegistryError::too_many_subjects(limit),
            _ => RegistryError::too_many_versions(subject, self.limits.max_versions_per_subject),
        })?;
        let violations = self.compatibility_violations(subject, text, None)?;
        if !violations.is_empty() {
            return Err(RegistryError::incompatible(&violations));
        }
        let id = self
            .ids_by_canonical
            .get(&canonical)
            .copied()
            .unwrap_or(self.max_id + 1);
        let version = self
            .subjects
            .get(subject)
            .and_then(|vs| vs.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let text = self
            .schemas
            .get(&id)
            .map(|s| s.text.clone())
            .unwrap_or_else(|| text.to_string());
        Ok(Registered {
            id,
            version,
            changes: vec![Change::PutSchema(SchemaRecord {
                subject: subject.to_string(),
                version,
                id,
                schema: text,
                deleted: false,
            })],
        })
    }

    /// Plans deleting one version: soft first, permanent only after soft.
    pub fn plan_delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<(u32, Vec<Change>), RegistryError> {
        let (entry, schema) = self.version(subject, spec, permanent)?;
        let change = if permanent {
            if !entry.deleted {
                return Err(RegistryError::version_not_soft_deleted(
                    subject,
                    entry.version,
                ));
            }
            Change::RemoveSchema {
                subject: subject.to_string(),
                version: entry.version,
            }
        } else {
            Change::PutSchema(SchemaRecord {
                subject: subject.to_string(),
                version: entry.version,
                id: entry.id,
                schema: schema.text.clone(),
                deleted: true,
            })
        };
        Ok((entry.version, vec![change]))
    }

    /// Plans deleting a whole subject; returns the versions it deletes.
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<u32>, Vec<Change>), RegistryError> {
        let entries = self.entries(subject, permanent)?;
        if permanent && entries.iter().any(|e| !e.deleted) {
            return Err(RegistryError::subject_not_soft_deleted(subject));
        }
        let mut changes = Vec::with_capacity(entries.len() + 1);
        for e in &entries {
            changes.push(if permanent {
                Change::RemoveSchema {
                    subject: subject.to_string(),
                    version: e.version,
                }
            } else {
                let text = self
                    .schema(e.id)
                    .map(|s| s.text.clone())
                    .unwrap_or_default();
                Change::PutSchema(SchemaRecord {
                    subject: subject.to_string(),
                    version: e.version,
                    id: e.id,
                    schema: text,
                    deleted: true,
                })
            });
        }
        if permanent && self.subject_levels.contains_key(subject) {
            changes.push(Change::RemoveConfig {
                subject: Some(subject.to_string()),
            });
        }
        Ok((entries.iter().map(|e| e.version).collect(), changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"}]}"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"long"},{"name":"b","type":["null","string"],"default":null}]}"#;
    const BREAKING: &str =
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;

    fn register(state: &mut RegistryState, subject: &str, text: &str) -> Registered {
        let planned = state.plan_register(subject, text).expect("registers");
        for c in planned.changes.clone() {
            state.apply(c).expect("applies");
        }
        planned
    }

    #[test]
    fn ids_are_shared_by_equal_schemas_and_versions_count_per_subject() {
        let mut s = RegistryState::new(CompatibilityLevel::Backward);
        let a1 = register(&mut s, "a-value", V1);
        let a2 = register(&mut s, "a-value", V2);
        let b1 = register(&mut s, "b-value", V2);
        assert_eq!((a1.id, a1.version), (1, 1));
        assert_eq!((a2.id, a2.version), (2, 2));
        assert_eq!((b1.id, b1.version), (2, 1), "same schema, same id");
        let again = register(&mut s, "a-value", V1);
        assert_eq!((again.id, again.version), (1, 1));
        assert!(again.changes.is_empty(), "re-registering writes nothing");
        assert_eq!(s.versions("a-value", false), Ok(vec![1, 2]));
        assert_eq!(
            s.usages(2, false),
            vec![("a-value".into(), 2), ("b-value".into(), 1)]
        );
    }

    #[test]
    fn incompatible_schema_is_rejected_with_409_unless_the_level_allows_it() {
        let mut s = RegistryState::new(CompatibilityLevel::Backward);
        register(&mut s, "a-value", V1);
        let err = s
            .plan_register("a-value", BREAKING)
            .expect_err("incompatible");
        assert_eq!((err.status.as_u16(), err.code), (409, 409));
        s.apply(Change::PutConfig {
            subject: Some("a-value".into()),
            level: CompatibilityLevel::None,
        })
        .expect("applies");
        assert_eq!(register(&mut s, "a-value", BREAKING).version, 2);
    }

    #[test]
    fn soft_then_permanent_delete() {
        let mut s = RegistryState::new(CompatibilityLevel::Backward);
        register(&mut s, "a-value", V1);
        let err = s
            .plan_delete_subject("a-value", true)
            .expect_err("needs soft delete first");
        assert_eq!(err.code, 40405);
        let (versions, changes) = s.plan_delete_subject("a-value", false).expect("soft");
        assert_eq!(versions, vec![1]);
        changes
            .into_iter()
            .for_each(|c| s.apply(c).expect("applies"));
        assert!(s.subjects(false).is_empty());
        assert_eq!(s.subjects(true), vec!["a-value".to_string()]);
        assert!(s.schema(1).is_some(), "soft-deleted ids still resolve");
        let (_, changes) = s.plan_delete_subject("a-value", true).expect("hard");
        changes
            .into_iter()
            .for_each(|c| s.apply(c).expect("applies"));
        assert!(s.subjects(true).is_empty());
        assert!(s.schema(1).is_none());
    }

    fn small_limits() -> Limits {
        Limits {
            max_schema_bytes: 200,
            max_subjects: 2,
            max_versions_per_subject: 2,
        }
    }

    fn record_named(name: &str) -> String {
        format!(r#"{{"type":"record","name":"{name}","fields":[{{"name":"a","type":"long"}}]}}"#)
    }

    #[test]
    fn registrations_over_the_limits_are_refused_and_plan_nothing() {
        let mut s = RegistryState::new(CompatibilityLevel::None).with_limits(small_limits());
        register(&mut s, "a-value", &record_named("A1"));
        register(&mut s, "a-value", &record_named("A2"));
        register(&mut s, "b-value", &record_named("B1"));
        let padded = format!(
            r#"{{"type":"record","name":"Big","doc":"{}","fields":[]}}"#,
            "x".repeat(200)
        );
        let cases = [
            ("c-value", padded.as_str(), 413, 41301),
            ("c-value", &record_named("C1"), 429, 42901),
            ("a-value", &record_named("A3"), 429, 42902),
        ];
        for (subject, text, status, code) in cases {
            let err = s.plan_register(subject, text).expect_err("over a limit");
            assert_eq!((err.status.as_u16(), err.code), (status, code), "{err}");
        }
        let again = s
            .plan_register("a-value", &record_named("A1"))
            .expect("a schema already held is no new version");
        assert!(again.changes.is_empty());
        assert_eq!(s.subjects(true), vec!["a-value", "b-value"]);
    }

    #[test]
    fn replay_skips_records_over_the_limits_but_never_reuses_their_ids() {
        let mut s = RegistryState::new(CompatibilityLevel::None).with_limits(small_limits());
        let put = |subject: &str, version, id, schema: String| {
            Change::PutSchema(SchemaRecord {
                subject: subject.into(),
                version,
                id,
                schema,
                deleted: false,
            })
        };
        let oversize = put("a-value", 1, 1, format!("{:>300}", record_named("A")));
        assert_eq!(s.apply(oversize).map_err(|e| e.reason()), Err("oversize"));
        s.apply(put("a-value", 1, 2, record_named("A1")))
            .expect("applies");
        s.apply(put("a-value", 2, 3, record_named("A2")))
            .expect("applies");
        assert_eq!(
            s.apply(put("a-value", 3, 4, record_named("A3")))
                .map_err(|e| e.reason()),
            Err("too_many_versions")
        );
        // A soft delete rewrites a version already held: not a new one.
        let mut soft = put("a-value", 2, 3, record_named("A2"));
        if let Change::PutSchema(r) = &mut soft {
            r.deleted = true;
        }
        s.apply(soft).expect("applies");
        s.apply(put("b-value", 1, 5, record_named("B1")))
            .expect("applies");
        assert_eq!(
            s.apply(put("c-value", 1, 6, record_named("C1")))
                .map_err(|e| e.reason()),
            Err("too_many_subjects")
        );
        assert_eq!(s.versions("a-value", true), Ok(vec![1, 2]));
        assert!(s.schema(1).is_none() && s.schema(4).is_none() && s.schema(6).is_none());
        let next = s
            .plan_register("b-value", &record_named("B2"))
            .expect("room left in b-value");
        assert_eq!((next.id, next.version), (7, 2), "skipped ids stay used");
    }
}

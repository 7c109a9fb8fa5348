//! Bounds on what the registry holds, so neither a client nor an old log
//! can make a replica grow without end: every replica keeps every schema in
//! memory. The same limits apply when a request is planned and when the log
//! is replayed, so a log written before a limit was lowered is read within
//! it (the excess is skipped and counted, see [`super::state::Skipped`]).

use super::error::RegistryError;

/// Defaults, documented in docs/api.md and in `pulse-registry --help`.
pub const DEFAULT_MAX_SCHEMA_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_SUBJECTS: usize = 10_000;
pub const DEFAULT_MAX_VERSIONS_PER_SUBJECT: usize = 1_000;

/// Room for the JSON around a schema in a request or log record (the
/// subject name, field names, flags).
const ENVELOPE_BYTES: usize = 64 * 1024;
/// JSON writes a byte of a string as at most 6 (`\u0000`).
const JSON_ESCAPE_FACTOR: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Length of a schema's text in bytes, as registered.
    pub max_schema_bytes: usize,
    /// Subjects, soft-deleted ones included (they are still held).
    pub max_subjects: usize,
    /// Versions of one subject, soft-deleted ones included.
    pub max_versions_per_subject: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_schema_bytes: DEFAULT_MAX_SCHEMA_BYTES,
            max_subjects: DEFAULT_MAX_SUBJECTS,
            max_versions_per_subject: DEFAULT_MAX_VERSIONS_PER_SUBJECT,
        }
    }
}

impl Limits {
    /// The largest request body or log record that can hold a schema within
    /// the limit: anything longer is refused before it is parsed.
    pub fn max_encoded_bytes(&self) -> usize {
        self.max_schema_bytes
            .saturating_mul(JSON_ESCAPE_FACTOR)
            .saturating_add(ENVELOPE_BYTES)
    }

    pub fn check_schema(&self, text: &str) -> Result<(), RegistryError> {
        if text.len() > self.max_schema_bytes {
            return Err(RegistryError::schema_too_large(
                text.len(),
                self.max_schema_bytes,
            ));
        }
        Ok(())
    }
}

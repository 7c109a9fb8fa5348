//! Why an attempt of a job failed, as every kind reports it to the runner.

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Another attempt may succeed: storage or ClickHouse failed.
    Transient(String),
    /// No attempt can: the job itself is wrong.
    Permanent(String),
}

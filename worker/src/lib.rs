//! Pulse worker: takes jobs from the jobs topic and runs each to its end,
//! apart from the web tier that queues them.
//!
//! - `consume`: the job consumer, which runs several jobs at once, keeps
//!   its group membership while they run for minutes, and commits a job
//!   only once it and those before it ended;
//! - `cancels`: cancel orders from the control topic, read by every worker;
//! - `run`: one job's attempts, with retries, progress and cancellation,
//!   each kind's attempt ending in a `failure` or its file;
//! - `report`: the report kind;
//! - `vision`: the OCR kind, which reads snapshots (files, or the entries
//!   of an `archive`) with `ocr` and publishes meter values through
//!   `telemetry`.

pub mod archive;
pub mod cancels;
pub mod consume;
pub mod failure;
pub mod metrics;
pub mod ocr;
pub mod progress;
pub mod report;
pub mod run;
pub mod telemetry;
pub mod vision;

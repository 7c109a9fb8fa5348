//! Pulse worker: takes jobs from the jobs topic and runs each to its end,
//! apart from the web tier that queues them.
//!
//! - `consume`: the job consumer, which keeps its group membership while a
//!   job runs for minutes and commits a job only once it ended;
//! - `cancels`: cancel orders from the control topic, read by every worker;
//! - `run`: one job's attempts, with retries, progress and cancellation,
//!   each kind's attempt ending in a `failure` or its file;
//! - `report`: the report kind;
//! - `vision`: the OCR kind, which reads snapshots with `ocr` and
//!   publishes meter values through `telemetry`.

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

//! Pulse worker: takes jobs from the jobs topic and runs each to its end,
//! apart from the web tier that queues them.
//!
//! - `consume`: the job consumer, which keeps its group membership while a
//!   job runs for minutes and commits a job only once it ended;
//! - `cancels`: cancel orders from the control topic, read by every worker;
//! - `run`: one job's attempts, with retries, progress and cancellation;
//! - `report`: the report kind.

pub mod cancels;
pub mod consume;
pub mod metrics;
pub mod report;
pub mod run;

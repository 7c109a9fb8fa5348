//! The load generator: a simulated fleet and the transports it sends over,
//! and cameras uploading meter snapshots for OCR jobs.

pub mod camera;
pub mod fleet;
pub mod send;
pub mod snapshots;
pub mod stats;

pub use fleet::{Anomaly, Fleet, Generated};

//! The load generator: a simulated fleet and the transports it sends over.

pub mod fleet;
pub mod send;
pub mod stats;

pub use fleet::{Anomaly, Fleet, Generated};

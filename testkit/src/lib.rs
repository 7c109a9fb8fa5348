//! Helpers for integration tests that run Pulse's binaries against the real
//! local stack (`./dev test` starts it and exports its addresses). A
//! dev-dependency of every service crate, never a dependency.
//!
//! - [`stack`]: where the stack is, and names and ports of a test's own;
//! - [`service`]: a binary run for a test, and polling with a deadline;
//! - [`start`]: a registry, an ingest gateway and a processor of a test's own;
//! - [`scripted`]: Kafka and ClickHouse servers of a test's own, for faults;
//! - [`kafka`], [`store`], [`mqtt`]: producing, reading and publishing;
//! - [`objects`]: object storage of a test's own, on the filesystem or S3;
//! - [`query_api`]: the query API over a database of its own, and tokens;
//! - [`pipeline`]: the whole pipeline of one test.
//!
//! Their items are re-exported here.

pub mod kafka;
pub mod meters;
pub mod mqtt;
pub mod objects;
pub mod pipeline;
pub mod query_api;
pub mod scripted;
pub mod service;
pub mod stack;
pub mod start;
pub mod store;

pub use kafka::*;
pub use mqtt::*;
pub use objects::*;
pub use scripted::*;
pub use service::*;
pub use stack::*;
pub use start::*;
pub use store::*;

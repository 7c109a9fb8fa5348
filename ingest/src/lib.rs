//! Pulse ingest: the HTTP gateway that validates events and produces them to
//! Kafka, the schema registry it registers them with, and the fleet simulator.

pub mod gateway;
pub mod registry;
pub mod simulate;

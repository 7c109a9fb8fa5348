//! Pulse ingest: the HTTP and MQTT gateway that validates events and
//! produces them to Kafka, and the fleet simulator. The schema registry it
//! registers them with is the `pulse-registry` crate.

pub mod gateway;
pub mod simulate;

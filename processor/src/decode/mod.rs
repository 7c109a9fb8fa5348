//! Records in the Confluent wire format to events: one reader per schema id
//! ([`records`]), reading the shipped shapes straight from the Avro binary
//! ([`wire_event`]).

pub mod records;
pub mod wire_event;

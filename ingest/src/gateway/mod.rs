//! The HTTP gateway: parse and validate a request's events, encode them as
//! Avro in the Confluent wire format, and acknowledge once Kafka has them.

pub mod auth;
pub mod avro_body;
pub mod encode;
pub mod files;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod openapi;
pub mod parse;
pub mod produce;

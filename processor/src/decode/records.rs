//! Decoding records in the Confluent wire format (magic byte, 4-byte schema
//! id, Avro binary) into events, with one reader per schema id, built once.
//!
//! The registry client fetches and caches the writer schemas, but its own
//! decode resolves the schema's names again and builds a new reader for
//! every record: a fifth of the time spent decoding. Here that happens once
//! per schema id.
//!
//! A registry that fails to answer never gets a record dead-lettered: a
//! connection error or any 5xx (and 401/403/408/429, which a fixed
//! configuration or a moment's wait cures) is retriable, and is removed from
//! the registry client's cache, which would otherwise replay a non-retriable
//! failure (schema_registry_converter 6 treats only 502/503 as retriable and
//! keeps every other failure until the process restarts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::Schema;
use pulse_common::contract;
use pulse_common::event::Event;
use pulse_common::json_avro::FieldError;
use pulse_common::schemas::EventKind;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    get_bytes_result, invalid_bytes_error, BytesResult,
};

use crate::decode::wire_event;

/// A schema id's reader, and how its records are read straight into events
/// when they can be ([`wire_event`]).
struct SchemaReader {
    datum: GenericDatumReader<'static>,
    direct: Option<wire_event::Plan>,
}

type Reader = Arc<SchemaReader>;

pub struct Decoder {
    registry: AvroDecoder,
    readers: Mutex<HashMap<u32, Reader>>,
}

/// Why a record is not an event the pipeline takes. Every kind but
/// [`DecodeError::Unavailable`] is the record's own fault, and the text is
/// the reason its dead letter carries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The registry could not be reached: the record is fine, try again later.
    #[error("schema registry: {0}")]
    Unavailable(String),
    /// Not in the wire format, of a schema the registry does not have, or
    /// not Avro of its schema.
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// Decodes, but is not an event.
    #[error("invalid event: {0}")]
    Invalid(FieldError),
    /// An event that breaks the input contract: a producer writing to Kafka
    /// directly meets the same contract as one going through ingest.
    #[error("breaks the input contract: {0}")]
    Contract(FieldError),
}

impl Decoder {
    pub fn new(registry: AvroDecoder) -> Self {
        Decoder {
            registry,
            readers: Mutex::default(),
        }
    }

    /// The event of `kind` in `payload`, checked against the input contract.
    pub(crate) async fn decode(
        &self,
        kind: EventKind,
        payload: Option<&[u8]>,
    ) -> Result<Event, DecodeError> {
        let event = self.read(kind, payload).await?;
        contract::check(&event).map_err(DecodeError::Contract)?;
        Ok(event)
    }

    async fn read(&self, kind: EventKind, payload: Option<&[u8]>) -> Result<Event, DecodeError> {
        let (id, datum) = match get_bytes_result(payload) {
            BytesResult::Valid(id, datum) => (id, datum),
            BytesResult::Null => return Err(DecodeError::Undecodable("no payload".into())),
            BytesResult::Invalid(bytes) => {
                return Err(DecodeError::Undecodable(invalid_bytes_error(bytes)))
            }
        };
        let cached = self.lock().get(&id).cloned();
        let reader = match cached {
            Some(reader) => reader,
            None => self.load(id).await?,
        };
        if let Some(plan) = &reader.direct {
            if let Some(event) = wire_event::read(plan, kind, datum) {
                return Ok(event);
            }
        }
        let value = reader
            .datum
            .read_value(&mut &datum[..])
            .map_err(|e| DecodeError::Undecodable(format!("not a record of schema {id}: {e}")))?;
        Event::from_avro(kind, value).map_err(DecodeError::Invalid)
    }

    async fn load(&self, id: u32) -> Result<Reader, DecodeError> {
        let schema = match self.registry.get_schema(id).await {
            Ok(schema) => schema,
            Err(e) => {
                if !registry_fault(&e) {
                    return Err(DecodeError::Undecodable(e.to_string()));
                }
                // Drops every cached failure, this one included, so the
                // next record of the schema asks the registry again.
                self.registry.remove_errors_from_cache();
                return Err(DecodeError::Unavailable(e.to_string()));
            }
        };
        let unreadable = |e| DecodeError::Undecodable(format!("schema {id} cannot be read: {e}"));
        // Tried on a borrowed copy first: a schema that cannot be read is
        // asked for again with each of its records, and must not leak each time.
        GenericDatumReader::builder(&schema.parsed)
            .build()
            .map_err(unreadable)?;
        // Readers borrow their schema. One copy per schema id lives as long
        // as the process: a registry's ids are few and never change meaning.
        let schema: &'static Schema = Box::leak(Box::new(schema.parsed.clone()));
        let datum = GenericDatumReader::builder(schema)
            .build()
            .map_err(unreadable)?;
        let reader = Arc::new(SchemaReader {
            datum,
            direct: wire_event::Plan::of(schema),
        });
        self.lock().insert(id, reader.clone());
        Ok(reader)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Reader>> {
        // The map is only ever inserted into: a panic cannot leave it half changed.
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether a failed schema fetch was the registry's fault (or the way to
/// it), not the record's: then the record is fine and worth trying again.
fn registry_fault(e: &SRCError) -> bool {
    e.retriable || http_status(e).is_some_and(|s| s >= 500 || [401, 403, 408, 429].contains(&s))
}

/// The HTTP status of a failed registry call. The client keeps it only in
/// its message: "HTTP request to schema registry failed with status 500 ...".
fn http_status(e: &SRCError) -> Option<u16> {
    let (_, rest) = e.error.split_once("failed with status ")?;
    rest.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema_registry_converter::async_impl::schema_registry::SrSettings;

    /// A decoder whose registry cannot be reached (nothing listens on port 9).
    fn offline() -> Decoder {
        let settings = SrSettings::new_builder("http://127.0.0.1:9".to_string())
            .no_proxy()
            .build();
        match settings {
            Ok(s) => Decoder::new(AvroDecoder::new(s)),
            Err(e) => panic!("registry settings: {e}"),
        }
    }

    #[tokio::test]
    async fn a_record_outside_the_wire_format_is_bad_for_good() {
        let decoder = offline();
        for payload in [
            None,
            Some(&b""[..]),
            Some(&[0u8, 0, 0][..]),
            Some(&[7u8, 0, 0, 0, 1, 2][..]),
        ] {
            match decoder.decode(EventKind::Telemetry, payload).await {
                Err(e) => assert!(matches!(e, DecodeError::Undecodable(_)), "{payload:?}: {e}"),
                Ok(v) => panic!("{payload:?} decoded as {v:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_worth_retrying() {
        let decoder = offline();
        match decoder
            .decode(EventKind::Telemetry, Some(&[0u8, 0, 0, 0, 1, 2, 4][..]))
            .await
        {
            Err(e) => assert!(matches!(e, DecodeError::Unavailable(_)), "{e}"),
            Ok(v) => panic!("decoded as {v:?} without a registry"),
        }
        assert!(
            decoder.lock().is_empty(),
            "no reader kept for a schema never fetched"
        );
    }

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"}]}"#;

    /// A registry that answers `first` to the first request for a schema,
    /// then the schema; returns its URL and how many requests it has had.
    async fn flaky_registry(first: u16) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::StatusCode;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = axum::Router::new().route(
            "/schemas/ids/{id}",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        let status = StatusCode::from_u16(first).unwrap_or(StatusCode::IM_A_TEAPOT);
                        let body = r#"{"error_code":50301,"message":"store unavailable"}"#;
                        (status, body.to_string())
                    } else {
                        (
                            StatusCode::OK,
                            serde_json::json!({"schema": SCHEMA}).to_string(),
                        )
                    }
                }
            }),
        );
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("a loopback port: {e}"),
        };
        let url = match listener.local_addr() {
            Ok(a) => format!("http://{a}"),
            Err(e) => panic!("bound: {e}"),
        };
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, calls)
    }

    fn decoder_of(url: String) -> Decoder {
        match SrSettings::new_builder(url).no_proxy().build() {
            Ok(s) => Decoder::new(AvroDecoder::new(s)),
            Err(e) => panic!("registry settings: {e}"),
        }
    }

    #[tokio::test]
    async fn a_failing_registry_is_retried_and_its_failure_never_kept() {
        // Schema id 1, then the long 21 (zig-zag: 42).
        let record = [0u8, 0, 0, 0, 1, 42];
        for first in [500u16, 502, 503, 504, 401, 429] {
            let (url, calls) = flaky_registry(first).await;
            let decoder = decoder_of(url);
            match decoder.decode(EventKind::Telemetry, Some(&record)).await {
                Err(e) => assert!(matches!(e, DecodeError::Unavailable(_)), "{first}: {e}"),
                Ok(v) => panic!("{first}: decoded as {v:?} from a failing registry"),
            }
            assert!(decoder.lock().is_empty(), "{first}: no reader kept");
            // The record is no event (no fields of one), but it decodes: the
            // schema was fetched again rather than the failure replayed.
            let second = decoder.decode(EventKind::Telemetry, Some(&record)).await;
            assert!(
                matches!(second, Err(DecodeError::Invalid(_))),
                "{first}: second decode: {second:?}"
            );
            assert_eq!(
                calls.load(std::sync::atomic::Ordering::SeqCst),
                2,
                "{first}"
            );
            assert_eq!(decoder.lock().len(), 1, "{first}: reader kept once fetched");
        }
    }

    #[tokio::test]
    async fn a_missing_schema_is_bad_for_good() {
        let (url, _) = flaky_registry(404).await;
        let decoder = decoder_of(url);
        match decoder
            .decode(EventKind::Telemetry, Some(&[0u8, 0, 0, 0, 1, 42][..]))
            .await
        {
            Err(e) => assert!(matches!(e, DecodeError::Undecodable(_)), "{e}"),
            Ok(v) => panic!("decoded as {v:?} without a schema"),
        }
    }
}

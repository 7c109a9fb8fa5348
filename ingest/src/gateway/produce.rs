//! Producing encoded events to Kafka and waiting for the broker's
//! acknowledgement of every one.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use pulse_common::config::KafkaClient;
use pulse_common::kafka::durable_producer_config;

pub struct EventProducer {
    producer: FutureProducer,
    /// How long a request waits for Kafka before it is answered 503.
    delivery_timeout: Duration,
}

/// One record to produce.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub payload: Vec<u8>,
}

impl EventProducer {
    pub fn new(kafka: &KafkaClient, delivery_timeout: Duration) -> anyhow::Result<Self> {
        let mut cfg = durable_producer_config(kafka);
        cfg.set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
        Ok(Self {
            producer: cfg.create()?,
            delivery_timeout,
        })
    }

    /// Produces every record and returns once Kafka acknowledged all of
    /// them (acks=all), or the first error.
    pub async fn send_all(
        &self,
        records: Vec<Outgoing<'_>>,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let sends = records.iter().map(|r| {
            self.producer.send(
                FutureRecord::to(r.topic).key(r.key).payload(&r.payload),
                Timeout::After(self.delivery_timeout),
            )
        });
        // The client's own timeout does not cover a request already written
        // to a broker that died: its answer waits for the socket to fail.
        // The caller is promised an answer within the bound, so it is kept
        // here too; a record delivered after it is a duplicate the client's
        // retry carries under the same event id.
        let bound = self.delivery_timeout + Duration::from_millis(500);
        let results = tokio::time::timeout(bound, join_all(sends))
            .await
            .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut))?;
        for result in results {
            result.map_err(|(e, _)| e)?;
        }
        Ok(())
    }

    /// Sends a record that could not be accepted to the dead-letter topic,
    /// with why in the `pulse-error` header and `headers` beside it.
    pub async fn dead_letter(
        &self,
        topic: &str,
        payload: &[u8],
        reason: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), rdkafka::error::KafkaError> {
        use rdkafka::message::{Header, OwnedHeaders};
        let all = headers.iter().fold(
            OwnedHeaders::new().insert(Header {
                key: "pulse-error",
                value: Some(reason),
            }),
            |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(*value),
                })
            },
        );
        self.producer
            .send(
                FutureRecord::<(), [u8]>::to(topic)
                    .payload(payload)
                    .headers(all),
                Timeout::After(self.delivery_timeout),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Waits for queued records to be delivered, for graceful shutdown.
    pub fn flush(&self, timeout: Duration) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "records still queued at shutdown");
        }
    }
}

//! Cancel orders, read from the control topic by every worker from its
//! start (the topic keeps a day of them), so that a job canceled while its
//! worker was down is still stopped by the worker that takes it over.

use std::collections::HashMap;
use std::time::Duration;

use pulse_common::config::KafkaClient;
use pulse_common::jobs::{Control, ControlAction};
use pulse_common::kafka::client_config;
use pulse_common::shutdown::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

/// Orders older than this are forgotten: no job waits that long.
const REMEMBERED_MS: i64 = 24 * 3600 * 1000;

/// The jobs canceled, with when.
#[derive(Clone)]
pub struct Cancels {
    canceled: watch::Receiver<HashMap<String, i64>>,
}

impl Cancels {
    /// Cancels fed by `tx`'s orders (`follow` reads them from Kafka).
    pub fn new() -> (Self, watch::Sender<HashMap<String, i64>>) {
        let (tx, rx) = watch::channel(HashMap::new());
        (Self { canceled: rx }, tx)
    }

    pub fn contains(&self, job_id: &str) -> bool {
        self.canceled.borrow().contains_key(job_id)
    }

    /// Resolves once `job_id` is canceled.
    pub async fn wait(&self, job_id: &str) {
        let mut rx = self.canceled.clone();
        if rx.wait_for(|c| c.contains_key(job_id)).await.is_err() {
            // The reader is gone (shutdown): no cancel comes any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Adds `control`'s order to `tx`'s set, forgetting old ones.
pub fn note(tx: &watch::Sender<HashMap<String, i64>>, control: &Control) {
    if control.action != ControlAction::Cancel {
        return;
    }
    tx.send_modify(|c| {
        let now = pulse_common::clock::now_ms();
        c.retain(|_, at| now - *at < REMEMBERED_MS);
        c.insert(control.job_id.clone(), control.at_ms);
    });
}

/// The control topic's consumer, reading every partition from the start.
pub fn consumer(kafka: &KafkaClient, topic: &str) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = client_config(kafka)
        .set("group.id", "pulse-worker-control")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    anyhow::ensure!(tpl.count() > 0, "topic {topic} has no partitions yet");
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// Reads orders into `tx` until shutdown.
pub async fn follow(
    consumer: StreamConsumer,
    tx: watch::Sender<HashMap<String, i64>>,
    shutdown: Shutdown,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.requested() => return,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => match m.payload().map(serde_json::from_slice::<Control>) {
                Some(Ok(control)) => {
                    tracing::info!(job_id = %control.job_id, "cancel order");
                    note(&tx, &control);
                }
                _ => tracing::warn!(offset = m.offset(), "unreadable control record skipped"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "control topic read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_wakes_the_job_it_names_only() {
        let (cancels, tx) = Cancels::new();
        let order = |id: &str, at_ms| Control {
            job_id: id.into(),
            tenant_id: "acme".into(),
            action: ControlAction::Cancel,
            at_ms,
        };
        let waiting = tokio::spawn({
            let cancels = cancels.clone();
            async move { cancels.wait("j1").await }
        });
        note(&tx, &order("j2", pulse_common::clock::now_ms()));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished() && cancels.contains("j2"));
        note(&tx, &order("j1", pulse_common::clock::now_ms()));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("joined");
        // A day-old order is forgotten when the next one comes.
        note(&tx, &order("old", 0));
        note(&tx, &order("j3", pulse_common::clock::now_ms()));
        assert!(!cancels.contains("old") && cancels.contains("j1"));
    }
}

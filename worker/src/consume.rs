//! The jobs topic's consumer. A job may run for minutes, and the worker
//! must stay in its consumer group meanwhile, or the group would hand the
//! job to another worker while this one still runs it: so while a job
//! runs, the worker pauses its partitions and keeps polling (which
//! returns nothing from paused partitions but keeps the membership). A
//! request's offset is committed only once its job ended, so a worker that
//! dies mid-job leaves it to the next, which counts on from its attempts.

use std::collections::VecDeque;
use std::time::Duration;

use pulse_common::config::KafkaClient;
use pulse_common::jobs::JobRequest;
use pulse_common::kafka::client_config;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::run::{Handled, Runner};

/// The consumer of the jobs topic, in group `group`.
pub fn consumer(
    kafka: &KafkaClient,
    group: &str,
    topic: &str,
    session_timeout_ms: u32,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (session_timeout_ms / 3).max(1).to_string(),
        )
        .create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Takes jobs until shutdown.
pub async fn run(consumer: StreamConsumer, runner: Runner) {
    // Records that arrived while a job ran (from partitions assigned
    // meanwhile): taken next, in order.
    let mut held: VecDeque<OwnedMessage> = VecDeque::new();
    loop {
        let message = match held.pop_front() {
            Some(m) => m,
            None => {
                let received = tokio::select! {
                    _ = runner.shutdown.requested() => return,
                    m = consumer.recv() => m.map(|m| m.detach()),
                };
                match received {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "jobs topic read failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        };
        let request = match message.payload().map(serde_json::from_slice::<JobRequest>) {
            Some(Ok(r)) => r,
            _ => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "unreadable job request skipped"
                );
                commit(&consumer, &message);
                continue;
            }
        };
        pause(&consumer, true);
        let handled = {
            let work = runner.handle(&request);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    done = &mut work => break done,
                    m = consumer.recv() => match m {
                        Ok(m) => {
                            held.push_back(m.detach());
                            // Assigned during the job: paused as well.
                            pause(&consumer, true);
                        }
                        Err(e) => tracing::warn!(error = %e, "jobs topic poll failed during a job"),
                    },
                }
            }
        };
        pause(&consumer, false);
        match handled {
            Handled::Ended => commit(&consumer, &message),
            Handled::Left => return,
        }
    }
}

fn pause(consumer: &StreamConsumer, paused: bool) {
    let assigned = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the assignment");
            return;
        }
    };
    let done = if paused {
        consumer.pause(&assigned)
    } else {
        consumer.resume(&assigned)
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, paused, "cannot pause or resume the jobs topic");
    }
}

fn commit(consumer: &StreamConsumer, message: &OwnedMessage) {
    let mut tpl = TopicPartitionList::new();
    let next = Offset::Offset(message.offset() + 1);
    if let Err(e) = tpl.add_partition_offset(message.topic(), message.partition(), next) {
        tracing::warn!(error = %e, "cannot name the offset to commit");
        return;
    }
    // A lost commit only means the request is read again, and a job that
    // ended is skipped then.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(error = %e, "job offset not committed");
    }
}

//! The consumer of the job requests topics. A job may run for minutes, and the worker
//! must stay in its consumer group meanwhile, or the group would hand the
//! job to another worker while this one still runs it: so while its hands
//! are full, the worker pauses its partitions and keeps polling (which
//! returns nothing from paused partitions but keeps the membership).
//!
//! Up to `concurrency` jobs run at once, so that the OCR models batch the
//! snapshots of several jobs and a long job does not hold up short ones.
//! Jobs end out of order, but a partition's offset says only "everything
//! before this is done": so a request's offset is committed once it and
//! every request before it on its partition ended. A worker that dies
//! mid-job leaves every unended request to the next, which skips those
//! that ended and counts on from the attempts of the rest.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use pulse_common::config::KafkaClient;
use pulse_common::jobs::JobRequest;
use pulse_common::kafka::client_config;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::run::{Handled, Runner};

/// The consumer of the requests topics `topics`, in group `group`.
pub fn consumer(
    kafka: &KafkaClient,
    group: &str,
    topics: &[String],
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
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Takes up to `concurrency` jobs at once until shutdown, then waits for
/// the running ones to end or be left.
pub async fn run(consumer: StreamConsumer, runner: Runner, concurrency: usize) {
    let limit = concurrency.max(1);
    // Records read but not yet started, in order, with their requests
    // (None: unreadable).
    let mut held: VecDeque<(OwnedMessage, Option<JobRequest>)> = VecDeque::new();
    let mut running = FuturesUnordered::new();
    // A job's request can come twice (a retried submit, or each query API
    // queueing a schedule's occurrence): the second waits for the first,
    // then finds the job ended.
    let mut running_jobs: HashSet<String> = HashSet::new();
    let mut outstanding = Outstanding::default();
    let mut paused = false;
    let mut stopping = false;
    loop {
        while running.len() < limit && !stopping {
            let next = held.iter().position(|(_, request)| {
                request
                    .as_ref()
                    .is_none_or(|r| !running_jobs.contains(&r.job_id))
            });
            let Some((message, request)) = next.and_then(|i| held.remove(i)) else {
                break;
            };
            match request {
                Some(request) => {
                    let runner = runner.clone();
                    running_jobs.insert(request.job_id.clone());
                    running.push(async move {
                        let handled = runner.handle(&request).await;
                        (message, request.job_id, handled)
                    });
                }
                None => {
                    tracing::warn!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "unreadable job request skipped"
                    );
                    ended(&consumer, &mut outstanding, &message);
                }
            }
        }
        if stopping && running.is_empty() {
            return;
        }
        let full = stopping || running.len() >= limit;
        if full != paused {
            pause(&consumer, full);
            paused = full;
        }
        tokio::select! {
            _ = runner.shutdown.requested(), if !stopping => stopping = true,
            Some((message, job_id, handled)) = running.next(), if !running.is_empty() => {
                running_jobs.remove(&job_id);
                match handled {
                    Handled::Ended => ended(&consumer, &mut outstanding, &message),
                    // Only shutdown leaves a job: it stays outstanding, so
                    // no commit passes it.
                    Handled::Left => stopping = true,
                }
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    let message = message.detach();
                    outstanding.read(message.topic(), message.partition(), message.offset());
                    let request = serde_json::from_slice(message.payload().unwrap_or_default()).ok();
                    held.push_back((message, request));
                    if paused {
                        // A partition assigned while the hands were full.
                        pause(&consumer, true);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "jobs topic read failed");
                    if running.is_empty() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            },
        }
    }
}

/// Marks `message`'s job ended and commits what that completes.
fn ended(consumer: &StreamConsumer, outstanding: &mut Outstanding, message: &OwnedMessage) {
    let (topic, partition) = (message.topic(), message.partition());
    if let Some(next) = outstanding.ended(topic, partition, message.offset()) {
        commit(consumer, topic, partition, next);
    }
}

/// The requests of each partition read and not yet ended, to tell how
/// far its offset may be committed.
#[derive(Debug, Default)]
struct Outstanding {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug)]
struct Partition {
    open: BTreeSet<i64>,
    /// The offset after the last request ended.
    ended_to: i64,
    /// Where the partition stands: at first, the first offset read.
    committed: i64,
}

impl Outstanding {
    fn read(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| Partition {
                open: BTreeSet::new(),
                ended_to: offset,
                committed: offset,
            })
            .open
            .insert(offset);
    }

    /// Marks a request ended; answers the offset to commit, if it moved.
    fn ended(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        if !p.open.remove(&offset) {
            return None;
        }
        p.ended_to = p.ended_to.max(offset + 1);
        let next = p.open.first().copied().unwrap_or(p.ended_to);
        (next > p.committed).then(|| {
            p.committed = next;
            next
        })
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

fn commit(consumer: &StreamConsumer, topic: &str, partition: i32, next: i64) {
    let mut tpl = TopicPartitionList::new();
    if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(next)) {
        tracing::warn!(error = %e, "cannot name the offset to commit");
        return;
    }
    // A lost commit only means requests are read again, and a job that
    // ended is skipped then.
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(error = %e, "job offset not committed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_committed_once_every_request_before_it_ended() {
        let mut o = Outstanding::default();
        for offset in 5..9 {
            o.read("jobs", 0, offset);
        }
        o.read("jobs", 1, 0);
        // 6 and 7 end first: 5 still runs, so nothing moves.
        assert_eq!(o.ended("jobs", 0, 6), None);
        assert_eq!(o.ended("jobs", 0, 7), None);
        // Another partition's requests are its own.
        assert_eq!(o.ended("jobs", 1, 0), Some(1));
        // 5 ends: everything to 7 is done, and 8 is next.
        assert_eq!(o.ended("jobs", 0, 5), Some(8));
        assert_eq!(o.ended("jobs", 0, 8), Some(9));
        // An end told twice, or of a request never read, commits nothing.
        assert_eq!(o.ended("jobs", 0, 8), None);
        assert_eq!(o.ended("jobs", 2, 0), None);
    }

    #[test]
    fn a_request_read_but_not_started_holds_the_offset_back() {
        let mut o = Outstanding::default();
        // 0 is held (read, not started) while 1 runs and ends.
        o.read("jobs", 0, 0);
        o.read("jobs", 0, 1);
        assert_eq!(o.ended("jobs", 0, 1), None);
        assert_eq!(o.ended("jobs", 0, 0), Some(2));
    }
}

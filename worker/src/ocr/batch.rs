//! Dynamic batching, as Triton's scheduler does it: requests from every
//! job running on this worker queue for one model, and the model runs
//! when a batch is full or when its oldest request has waited the most it
//! may. Requests batch only with others of the same key (an input shape),
//! since a batch is one tensor.
//!
//! Each model runs on a thread of its own, so that a slow batch blocks
//! none of the async tasks that feed it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prometheus::HistogramVec;
use tokio::sync::oneshot;

/// How a model's batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_batch: usize,
    pub max_delay: Duration,
}

struct Request<K, I, O> {
    key: K,
    input: I,
    queued: Instant,
    reply: oneshot::Sender<Result<O, String>>,
}

/// The queue in front of one model.
pub struct Batcher<K, I, O> {
    queue: mpsc::Sender<Request<K, I, O>>,
}

impl<K, I, O> Clone for Batcher<K, I, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// What the model thread records of each batch.
#[derive(Clone)]
pub struct Observed {
    pub model: &'static str,
    pub batch_sizes: HistogramVec,
    pub queue_seconds: HistogramVec,
}

impl<K, I, O> Batcher<K, I, O>
where
    K: Eq + Hash + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Starts the model's thread; `run` takes a batch of one key and
    /// answers one output per input, in order.
    pub fn start<F>(policy: Policy, observed: Observed, mut run: F) -> Self
    where
        F: FnMut(&K, Vec<I>) -> Result<Vec<O>, String> + Send + 'static,
    {
        let (queue, requests) = mpsc::channel::<Request<K, I, O>>();
        let name = format!("pulse-{}", observed.model);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let mut pending: HashMap<K, Vec<Request<K, I, O>>> = HashMap::new();
            loop {
                let oldest = pending
                    .values()
                    .filter_map(|batch| batch.first().map(|r| r.queued))
                    .min();
                let received = match oldest {
                    None => requests
                        .recv()
                        .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(t) => {
                        let wait = (t + policy.max_delay).saturating_duration_since(Instant::now());
                        requests.recv_timeout(wait)
                    }
                };
                let closed = match received {
                    Ok(request) => {
                        let key = request.key.clone();
                        let batch = pending.entry(key.clone()).or_default();
                        batch.push(request);
                        if batch.len() >= policy.max_batch.max(1) {
                            let batch = pending.remove(&key).unwrap_or_default();
                            execute(&mut run, &observed, &key, batch);
                        }
                        false
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => false,
                    Err(mpsc::RecvTimeoutError::Disconnected) => true,
                };
                let now = Instant::now();
                let due: Vec<K> = pending
                    .iter()
                    .filter(|(_, b)| {
                        closed
                            || b.first()
                                .is_some_and(|r| r.queued + policy.max_delay <= now)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in due {
                    let batch = pending.remove(&key).unwrap_or_default();
                    execute(&mut run, &observed, &key, batch);
                }
                if closed {
                    return;
                }
            }
        });
        if let Err(e) = spawned {
            // Every request then answers that the model is not running.
            tracing::error!(error = %e, "cannot start a model thread");
        }
        Self { queue }
    }

    /// Queues `input` and waits for its output.
    pub async fn infer(&self, key: K, input: I) -> Result<O, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            key,
            input,
            queued: Instant::now(),
            reply,
        };
        self.queue
            .send(request)
            .map_err(|_| "the model is not running".to_string())?;
        answer
            .await
            .map_err(|_| "the model stopped before answering".to_string())?
    }
}

fn execute<K, I, O, F>(run: &mut F, observed: &Observed, key: &K, batch: Vec<Request<K, I, O>>)
where
    F: FnMut(&K, Vec<I>) -> Result<Vec<O>, String>,
{
    if batch.is_empty() {
        return;
    }
    let now = Instant::now();
    let labels = [observed.model];
    observed
        .batch_sizes
        .with_label_values(&labels)
        .observe(batch.len() as f64);
    let mut inputs = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for r in batch {
        observed
            .queue_seconds
            .with_label_values(&labels)
            .observe(now.duration_since(r.queued).as_secs_f64());
        inputs.push(r.input);
        replies.push(r.reply);
    }
    let count = replies.len();
    match run(key, inputs) {
        Ok(outputs) if outputs.len() == count => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                // A requester that gave up (a canceled job) is no error.
                let _ = reply.send(Ok(output));
            }
        }
        Ok(outputs) => {
            let why = format!(
                "the model answered {} outputs for {count} inputs",
                outputs.len()
            );
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
        Err(why) => {
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{histogram_opts, HistogramVec};

    fn observed() -> Observed {
        let h = |n: &str| HistogramVec::new(histogram_opts!(n, "test"), &["model"]).unwrap();
        Observed {
            model: "test",
            batch_sizes: h("sizes"),
            queue_seconds: h("queue"),
        }
    }

    #[tokio::test]
    async fn requests_of_one_key_share_a_batch_and_others_do_not() {
        let policy = Policy {
            max_batch: 4,
            max_delay: Duration::from_millis(200),
        };
        let seen = observed();
        let batcher = Batcher::start(policy, seen.clone(), |key: &u32, inputs: Vec<u32>| {
            let n = inputs.len() as u32;
            Ok(inputs.into_iter().map(|i| (key * 1000 + i, n)).collect())
        });
        let mut calls = Vec::new();
        for i in 0..4 {
            calls.push(batcher.infer(1, i));
        }
        calls.push(batcher.infer(2, 9));
        let answers = futures::future::join_all(calls).await;
        let answers: Vec<(u32, u32)> = answers.into_iter().map(Result::unwrap).collect();
        // The four of key 1 filled a batch; key 2's ran alone at its deadline.
        assert_eq!(
            answers,
            vec![(1000, 4), (1001, 4), (1002, 4), (1003, 4), (2009, 1)]
        );
        let sizes = seen.batch_sizes.with_label_values(&["test"]);
        assert_eq!((sizes.get_sample_count(), sizes.get_sample_sum()), (2, 5.0));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_requests() {
        let policy = Policy {
            max_batch: 2,
            max_delay: Duration::from_millis(10),
        };
        let batcher = Batcher::start(policy, observed(), |_: &(), _: Vec<u8>| {
            Err::<Vec<u8>, _>("out of memory".to_string())
        });
        let (a, b) = tokio::join!(batcher.infer((), 1), batcher.infer((), 2));
        assert_eq!(
            (a.unwrap_err(), b.unwrap_err()),
            ("out of memory".into(), "out of memory".into())
        );
    }
}

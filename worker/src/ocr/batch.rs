//! Dynamic batching, as Triton's scheduler does it: requests from every
//! job running on this worker queue for one model, and the model runs
//! when a batch is full or when its oldest request has waited the most it
//! may. Requests batch only with others of the same key (an input shape),
//! since a batch is one tensor.
//!
//! A model may have several instances (Triton's instance group), each a
//! thread with a session of its own that takes the next ready batch when
//! it is free. A batch is taken only once an instance can run it, so
//! while every instance is busy the queue grows and the next batch takes
//! as much of it as it may: batches grow with the load. Every run of any
//! model holds one of the process's `Slots`, so that the models together
//! never run on more threads than they were given.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prometheus::HistogramVec;
use tokio::sync::oneshot;

/// How a model's batches are formed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_batch: usize,
    pub max_delay: Duration,
}

struct Request<I, O> {
    input: I,
    queued: Instant,
    reply: oneshot::Sender<Result<O, String>>,
}

/// The requests waiting for one model, by key.
struct Queue<K, I, O> {
    state: Mutex<Waiting<K, I, O>>,
    changed: Condvar,
    policy: Policy,
}

struct Waiting<K, I, O> {
    pending: HashMap<K, VecDeque<Request<I, O>>>,
    /// Every `Batcher` is gone: what waits runs now, then the instances stop.
    closed: bool,
}

/// The queue in front of one model.
pub struct Batcher<K, I, O> {
    handle: Arc<Handle<K, I, O>>,
}

/// Shared by a batcher's clones; the last one dropped closes the queue.
struct Handle<K, I, O>(Arc<Queue<K, I, O>>);

impl<K, I, O> Drop for Handle<K, I, O> {
    fn drop(&mut self) {
        let mut waiting = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        waiting.closed = true;
        drop(waiting);
        self.0.changed.notify_all();
    }
}

impl<K, I, O> Clone for Batcher<K, I, O> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

/// What the model threads record of each batch.
#[derive(Clone)]
pub struct Observed {
    pub model: &'static str,
    pub batch_sizes: HistogramVec,
    pub queue_seconds: HistogramVec,
}

/// Model runs that may go at once, across every model of the process.
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Slots {
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Waits for a free slot; it is given back when the guard drops.
    fn take(&self) -> Slot<'_> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = self
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot(self)
    }
}

struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// What an instance should do next.
enum Next<K> {
    Run(K),
    WaitUntil(Instant),
    Wait,
    Stop,
}

impl<K: Eq + Hash + Clone, I, O> Queue<K, I, O> {
    fn lock(&self) -> MutexGuard<'_, Waiting<K, I, O>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key of the ready batch whose oldest request waited longest (a
    /// batch is ready when full, past its delay, or closing), else how
    /// long to wait.
    fn next(&self, waiting: &Waiting<K, I, O>, now: Instant) -> Next<K> {
        let max_batch = self.policy.max_batch.max(1);
        let mut ready: Option<(&K, Instant)> = None;
        let mut due: Option<Instant> = None;
        for (key, requests) in &waiting.pending {
            let Some(oldest) = requests.front().map(|r| r.queued) else {
                continue;
            };
            let at = oldest + self.policy.max_delay;
            if waiting.closed || requests.len() >= max_batch || at <= now {
                if ready.is_none_or(|(_, t)| oldest < t) {
                    ready = Some((key, oldest));
                }
            } else {
                due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
        match (ready, due) {
            (Some((key, _)), _) => Next::Run(key.clone()),
            (None, Some(at)) => Next::WaitUntil(at),
            (None, None) if waiting.closed => Next::Stop,
            (None, None) => Next::Wait,
        }
    }

    /// Takes up to a batch of `key`'s requests, oldest first.
    fn take(&self, waiting: &mut Waiting<K, I, O>, key: &K) -> Vec<Request<I, O>> {
        let Some(requests) = waiting.pending.get_mut(key) else {
            return Vec::new();
        };
        let n = requests.len().min(self.policy.max_batch.max(1));
        let batch: Vec<_> = requests.drain(..n).collect();
        if requests.is_empty() {
            waiting.pending.remove(key);
        }
        batch
    }

    /// One instance's life: take a ready batch once a slot is free, run
    /// it, and again, until the queue closes and is empty.
    fn serve<F>(&self, slots: &Slots, observed: &Observed, mut run: F)
    where
        F: FnMut(&K, Vec<I>) -> Result<Vec<O>, String>,
    {
        let mut waiting = self.lock();
        loop {
            waiting = match self.next(&waiting, Instant::now()) {
                Next::Stop => return,
                Next::Wait => self
                    .changed
                    .wait(waiting)
                    .unwrap_or_else(PoisonError::into_inner),
                Next::WaitUntil(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(waiting, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                Next::Run(key) => {
                    drop(waiting);
                    let slot = slots.take();
                    // Taken now, not when it became ready: what queued
                    // while the slot was awaited rides along.
                    let batch = {
                        let mut waiting = self.lock();
                        let batch = self.take(&mut waiting, &key);
                        if !waiting.pending.is_empty() {
                            // More may be ready for an idle instance.
                            self.changed.notify_one();
                        }
                        batch
                    };
                    execute(&mut run, observed, &key, batch);
                    drop(slot);
                    self.lock()
                }
            };
        }
    }
}

impl<K, I, O> Batcher<K, I, O>
where
    K: Eq + Hash + Clone + Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
{
    /// Starts a thread for each of the model's `instances`; each takes a
    /// batch of one key and answers one output per input, in order.
    pub fn start<F>(
        policy: Policy,
        observed: Observed,
        slots: Arc<Slots>,
        instances: Vec<F>,
    ) -> std::io::Result<Self>
    where
        F: FnMut(&K, Vec<I>) -> Result<Vec<O>, String> + Send + 'static,
    {
        let queue = Arc::new(Queue {
            state: Mutex::new(Waiting {
                pending: HashMap::new(),
                closed: false,
            }),
            changed: Condvar::new(),
            policy,
        });
        // Dropped on an early return, which stops the threads started.
        let handle = Arc::new(Handle(queue.clone()));
        for (i, run) in instances.into_iter().enumerate() {
            let (queue, slots, observed) = (queue.clone(), slots.clone(), observed.clone());
            std::thread::Builder::new()
                .name(format!("pulse-{}-{i}", observed.model))
                .spawn(move || queue.serve(&slots, &observed, run))?;
        }
        Ok(Self { handle })
    }

    /// Queues `input` under `key` and waits for its output.
    pub async fn infer(&self, key: K, input: I) -> Result<O, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            input,
            queued: Instant::now(),
            reply,
        };
        let queue = &self.handle.0;
        queue
            .lock()
            .pending
            .entry(key)
            .or_default()
            .push_back(request);
        queue.changed.notify_one();
        answer
            .await
            .map_err(|_| "the model stopped before answering".to_string())?
    }
}

fn execute<K, I, O, F>(run: &mut F, observed: &Observed, key: &K, batch: Vec<Request<I, O>>)
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn observed() -> Observed {
        let h = |n: &str| HistogramVec::new(histogram_opts!(n, "test"), &["model"]).unwrap();
        Observed {
            model: "test",
            batch_sizes: h("sizes"),
            queue_seconds: h("queue"),
        }
    }

    fn policy(max_batch: usize, max_delay_ms: u64) -> Policy {
        Policy {
            max_batch,
            max_delay: Duration::from_millis(max_delay_ms),
        }
    }

    #[tokio::test]
    async fn requests_of_one_key_share_a_batch_and_others_do_not() {
        let seen = observed();
        let batcher = Batcher::start(
            policy(4, 200),
            seen.clone(),
            Slots::new(1),
            vec![|key: &u32, inputs: Vec<u32>| {
                let n = inputs.len() as u32;
                Ok(inputs.into_iter().map(|i| (key * 1000 + i, n)).collect())
            }],
        )
        .unwrap();
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
        let batcher = Batcher::start(
            policy(2, 10),
            observed(),
            Slots::new(1),
            vec![|_: &(), _: Vec<u8>| Err::<Vec<u8>, _>("out of memory".to_string())],
        )
        .unwrap();
        let (a, b) = tokio::join!(batcher.infer((), 1), batcher.infer((), 2));
        assert_eq!(
            (a.unwrap_err(), b.unwrap_err()),
            ("out of memory".into(), "out of memory".into())
        );
    }

    /// Two instances, each given one batch of a key of its own; answers
    /// how many ran at once at most.
    async fn most_at_once(slots: usize) -> usize {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let instance = || {
            let (now, most) = (now.clone(), most.clone());
            move |_: &u8, inputs: Vec<u8>| {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                // Long enough for the other instance to take its batch.
                std::thread::sleep(Duration::from_millis(300));
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(inputs)
            }
        };
        let batcher = Batcher::start(
            policy(1, 1),
            observed(),
            Slots::new(slots),
            vec![instance(), instance()],
        )
        .unwrap();
        let (a, b) = tokio::join!(batcher.infer(1, 1), batcher.infer(2, 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
        most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn instances_run_batches_side_by_side_within_the_slots() {
        assert_eq!(most_at_once(2).await, 2);
        assert_eq!(most_at_once(1).await, 1);
    }

    #[tokio::test]
    async fn a_batch_waiting_for_a_busy_instance_takes_what_queued_meanwhile() {
        let seen = observed();
        let started = Arc::new(std::sync::Barrier::new(2));
        let go = Arc::new(std::sync::Barrier::new(2));
        let (s, g) = (started.clone(), go.clone());
        let mut first = true;
        let instance = move |_: &(), inputs: Vec<u32>| {
            if std::mem::take(&mut first) {
                // The first batch holds the only instance until the test
                // has queued five more.
                s.wait();
                g.wait();
            }
            Ok(inputs)
        };
        let batcher =
            Batcher::start(policy(8, 1), seen.clone(), Slots::new(1), vec![instance]).unwrap();
        let mut one = Box::pin(batcher.infer((), 0));
        // Polled once, a request is queued.
        assert!(futures::poll!(one.as_mut()).is_pending());
        tokio::task::spawn_blocking(move || started.wait())
            .await
            .unwrap();
        let mut rest: Vec<_> = (1..6).map(|i| Box::pin(batcher.infer((), i))).collect();
        for r in &mut rest {
            assert!(futures::poll!(r.as_mut()).is_pending());
        }
        tokio::task::spawn_blocking(move || go.wait())
            .await
            .unwrap();
        assert_eq!(one.await.unwrap(), 0);
        for (i, r) in (1..6).zip(rest) {
            assert_eq!(r.await.unwrap(), i);
        }
        let sizes = seen.batch_sizes.with_label_values(&["test"]);
        assert_eq!((sizes.get_sample_count(), sizes.get_sample_sum()), (2, 6.0));
    }
}

//! The results topic, read once per API instance and fanned out to its
//! WebSocket clients, with a window of recent results kept so that a client
//! that reconnects resumes where it left off.
//!
//! Every result has a place in the topic, (partition, offset), identical on
//! every API instance since each reads the whole topic. A client's position
//! is the last offset it has passed in each partition; it travels as an
//! opaque cursor on each message, and a client reconnecting with it is sent
//! the window's results after it before anything new.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulse_common::config::KafkaClient;
use pulse_common::kafka::client_config;
use pulse_common::scored::ScoredEvent;
use pulse_common::shutdown::Shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use tokio::sync::broadcast;

use crate::metrics;

/// One result, with its place in the topic and its JSON text, serialised
/// once for every client.
#[derive(Debug)]
pub struct Positioned {
    pub partition: i32,
    pub offset: i64,
    pub event: ScoredEvent,
    pub json: String,
}

/// The last offset passed in each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(BTreeMap<i32, i64>);

impl Position {
    pub fn advance(&mut self, partition: i32, offset: i64) {
        let last = self.0.entry(partition).or_insert(offset);
        *last = (*last).max(offset);
    }

    fn passed(&self, partition: i32, offset: i64) -> bool {
        self.0.get(&partition).is_some_and(|&last| offset <= last)
    }

    /// Moves past (partition, offset); false if it was passed already (a
    /// client resuming on an instance behind the one it came from).
    pub fn pass(&mut self, partition: i32, offset: i64) -> bool {
        if self.passed(partition, offset) {
            return false;
        }
        self.advance(partition, offset);
        true
    }

    /// The cursor clients hold: `partition.offset` pairs joined by `_`.
    pub fn encode(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(p, o)| format!("{p}.{o}")).collect();
        pairs.join("_")
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut position = Self::default();
        for pair in s.split('_').filter(|p| !p.is_empty()) {
            let (p, o) = pair.split_once('.')?;
            let (p, o) = (p.parse().ok()?, o.parse().ok()?);
            if p < 0 || o < 0 {
                return None;
            }
            position.advance(p, o);
        }
        Some(position)
    }
}

/// The recent results an instance holds, oldest first, up to `capacity`.
pub struct Window {
    capacity: usize,
    results: VecDeque<Arc<Positioned>>,
    /// Per partition, the last offset fanned out.
    head: Position,
    /// Per partition, the last offset this instance does not hold: read
    /// before it started, or pushed out of the window since.
    dropped: Position,
}

/// What a subscriber starts from: the results after its position, and
/// whether some it had not seen are no longer held.
pub struct Resumed {
    pub position: Position,
    pub replay: Vec<Arc<Positioned>>,
    pub gap: bool,
}

impl Window {
    pub fn new(capacity: usize, start: &Position) -> Self {
        let mut dropped = Position::default();
        // An empty partition has nothing before the start.
        for (&p, &next) in start.0.iter().filter(|(_, &next)| next > 0) {
            dropped.advance(p, next - 1);
        }
        Self {
            capacity,
            results: VecDeque::new(),
            head: dropped.clone(),
            dropped,
        }
    }

    fn push(&mut self, r: Arc<Positioned>) {
        self.head.advance(r.partition, r.offset);
        if self.capacity == 0 {
            self.dropped.advance(r.partition, r.offset);
            return;
        }
        if self.results.len() == self.capacity {
            if let Some(old) = self.results.pop_front() {
                self.dropped.advance(old.partition, old.offset);
            }
        }
        self.results.push_back(r);
    }

    /// Where a subscriber starts: from `from` when it resumes, else from now.
    pub fn resume(&self, from: Option<&Position>) -> Resumed {
        let Some(from) = from else {
            return Resumed {
                position: self.head.clone(),
                replay: Vec::new(),
                gap: false,
            };
        };
        let gap = self
            .dropped
            .0
            .iter()
            .any(|(&p, &dropped)| !from.passed(p, dropped));
        let replay = self
            .results
            .iter()
            .filter(|r| !from.passed(r.partition, r.offset))
            .cloned()
            .collect();
        Resumed {
            position: from.clone(),
            replay,
            gap,
        }
    }
}

/// The live side of the API: this instance's one consumer feeds `tx` and
/// the window; clients subscribe to both at once. The feed begins once the
/// consumer knows where it starts (`begin`); until then there is nothing to
/// subscribe to.
#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Positioned>>,
    window: Arc<Mutex<Option<Window>>>,
    capacity: usize,
}

impl Feed {
    /// A feed whose clients may each fall `buffer` results behind, keeping
    /// the last `window` results for resuming clients; not begun.
    pub fn new(buffer: usize, window: usize) -> Self {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Self {
            tx,
            window: Arc::new(Mutex::new(None)),
            capacity: window,
        }
    }

    /// Begins the feed at `start`, where its consumer begins reading.
    pub fn begin(&self, start: &Position) {
        if let Ok(mut window) = self.window.lock() {
            *window = Some(Window::new(self.capacity, start));
        }
    }

    /// Publishes a result to the window and every subscriber.
    pub fn publish(&self, r: Positioned) {
        let r = Arc::new(r);
        // The lock spans both, so a subscriber sees each result exactly once:
        // in its replay or on its channel.
        if let Ok(mut guard) = self.window.lock() {
            if let Some(window) = guard.as_mut() {
                window.push(r.clone());
                // No receivers is fine: nobody is watching.
                let _ = self.tx.send(r);
            }
        }
    }

    /// A new subscriber's replay and channel, from `from` or from now; None
    /// before the feed has begun.
    pub fn subscribe(
        &self,
        from: Option<&Position>,
    ) -> Option<(Resumed, broadcast::Receiver<Arc<Positioned>>)> {
        let guard = self.window.lock().ok()?;
        let window = guard.as_ref()?;
        Some((window.resume(from), self.tx.subscribe()))
    }
}

/// A consumer of every partition of `topic`, positioned at the current end,
/// so everything produced after this returns is delivered, and where it
/// starts. Each API instance reads all results itself: no consumer group.
///
/// Fails, to be retried (`crate::startup`), while the topic is not there
/// or a partition has no leader yet, as just after the topic is created.
pub async fn consumer_from_now(
    kafka: &KafkaClient,
    topic: &str,
) -> anyhow::Result<(StreamConsumer, Position)> {
    let mut cfg = client_config(kafka);
    // Results are written in transactions: only committed ones are shown.
    cfg.set("group.id", "pulse-query-api")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let topic = topic.to_string();
    // On a thread of its own: the lookups block, and start-up must still
    // notice a shutdown meanwhile (each lookup is short, so the thread is
    // soon done).
    tokio::task::spawn_blocking(move || -> anyhow::Result<(StreamConsumer, Position)> {
        let consumer: StreamConsumer = cfg.create()?;
        let start = assign_from_now(&consumer, &topic)?;
        Ok((consumer, start))
    })
    .await?
}

fn assign_from_now(consumer: &StreamConsumer, topic: &str) -> anyhow::Result<Position> {
    let timeout = Duration::from_secs(3);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut start = Position::default();
    for t in metadata.topics() {
        if let Some(e) = t.error() {
            anyhow::bail!("topic {topic}: {e:?}");
        }
        for p in t.partitions() {
            if let Some(e) = p.error() {
                anyhow::bail!("partition {} of {topic}: {e:?}", p.id());
            }
            if p.leader() < 0 {
                anyhow::bail!("partition {} of {topic} has no leader yet", p.id());
            }
            let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(high))?;
            start.advance(p.id(), high);
        }
    }
    if tpl.count() == 0 {
        anyhow::bail!("topic {topic} has no partitions yet");
    }
    consumer.assign(&tpl)?;
    Ok(start)
}

/// Reads the results topic into `feed` until shutdown.
pub async fn fan_out(consumer: StreamConsumer, feed: Feed, shutdown: Shutdown) {
    loop {
        let msg = tokio::select! {
            _ = shutdown.requested() => return,
            m = consumer.recv() => m,
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "results consumer error");
                continue;
            }
        };
        let Some(payload) = m.payload() else { continue };
        match serde_json::from_slice::<ScoredEvent>(payload) {
            // Clients get the record's own text with their cursor spliced
            // in, which needs a JSON object.
            Ok(event) if payload.starts_with(b"{") => {
                let json = String::from_utf8_lossy(payload).into_owned();
                metrics::RESULTS_FANNED_OUT.inc();
                feed.publish(Positioned {
                    partition: m.partition(),
                    offset: m.offset(),
                    event,
                    json,
                });
            }
            Ok(_) | Err(_) => {
                tracing::warn!(offset = m.offset(), "skipping unreadable result")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(partition: i32, offset: i64) -> Positioned {
        Positioned {
            partition,
            offset,
            event: ScoredEvent::default(),
            json: "{}".into(),
        }
    }

    fn offsets(r: &Resumed) -> Vec<(i32, i64)> {
        r.replay.iter().map(|r| (r.partition, r.offset)).collect()
    }

    #[test]
    fn a_feed_has_no_subscribers_before_it_begins() {
        let feed = Feed::new(8, 8);
        assert!(feed.subscribe(None).is_none());
        // A result before the beginning is not kept.
        feed.publish(result(0, 3));
        feed.begin(&Position::decode("0.4").expect("cursor"));
        let (resumed, _rx) = feed.subscribe(None).expect("begun");
        assert_eq!(resumed.position.encode(), "0.3");
        assert!(resumed.replay.is_empty());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let mut p = Position::default();
        p.advance(0, 15);
        p.advance(3, 7);
        p.advance(3, 2);
        assert_eq!(p.encode(), "0.15_3.7");
        assert_eq!(Position::decode(&p.encode()), Some(p));
        assert_eq!(Position::decode(""), Some(Position::default()));
        for bad in ["x", "0.a", "0-1", "-1.3", "1.-3", "0.1_2"] {
            assert_eq!(Position::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_position_passes_each_offset_once() {
        let mut p = Position::decode("0.10").expect("cursor");
        assert!(!p.pass(0, 9) && !p.pass(0, 10));
        assert!(p.pass(0, 11) && !p.pass(0, 11));
        assert!(p.pass(1, 0));
        assert_eq!(p.encode(), "0.11_1.0");
    }

    #[test]
    fn a_resume_replays_exactly_what_follows_its_position() {
        let start = Position::decode("0.10_1.20").expect("cursor");
        let mut w = Window::new(4, &start);
        for (p, o) in [(0, 10), (1, 20), (0, 12), (1, 21)] {
            w.push(Arc::new(result(p, o)));
        }
        // Fresh: from the head, nothing to replay.
        let now = w.resume(None);
        assert_eq!(now.position.encode(), "0.12_1.21");
        assert!(now.replay.is_empty() && !now.gap);

        let seen = Position::decode("0.10_1.20").expect("cursor");
        let r = w.resume(Some(&seen));
        assert_eq!(offsets(&r), [(0, 12), (1, 21)]);
        assert!(!r.gap);

        // One more result pushes (0, 10) out: a client that saw it misses
        // nothing; one from before it has a gap.
        w.push(Arc::new(result(0, 13)));
        let r = w.resume(Some(&seen));
        assert_eq!(offsets(&r), [(0, 12), (1, 21), (0, 13)]);
        assert!(!r.gap);
        let older = Position::decode("0.5_1.20").expect("cursor");
        assert!(w.resume(Some(&older)).gap);
        // A partition the client never saw is replayed whole, and what came
        // before this instance started counts as a gap.
        let r = w.resume(Some(&Position::decode("1.21").expect("cursor")));
        assert_eq!(offsets(&r), [(0, 12), (0, 13)]);
        assert!(r.gap);
    }
}

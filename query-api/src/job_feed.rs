//! Job transitions for live streams: the job-events topic, read from its
//! end by each API instance, and offered to the WebSocket clients that ask
//! for jobs (`/v1/stream?jobs=true`), each seeing its own tenant's only.

use std::sync::Arc;

use pulse_common::jobs::Job;
use pulse_common::shutdown::Shutdown;
use rdkafka::consumer::StreamConsumer;
use rdkafka::Message as _;
use tokio::sync::broadcast;

use crate::jobs::JobView;

/// One transition, serialised once for every client.
#[derive(Debug)]
pub struct JobNote {
    pub tenant: String,
    /// `{"type":"job","job":{...}}`.
    pub json: String,
}

#[derive(Clone)]
pub struct JobFeed {
    tx: broadcast::Sender<Arc<JobNote>>,
}

impl JobFeed {
    /// A feed holding up to `buffer` transitions for a client that lags.
    pub fn new(buffer: usize) -> Self {
        Self {
            tx: broadcast::channel(buffer.max(1)).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<JobNote>> {
        self.tx.subscribe()
    }

    /// Offers `job`'s transition to the clients.
    pub fn publish(&self, job: Job) {
        let tenant = job.tenant_id.clone();
        let note = serde_json::json!({"type": "job", "job": JobView::from(job)});
        // No client listening is no error.
        let _ = self.tx.send(Arc::new(JobNote {
            tenant,
            json: note.to_string(),
        }));
    }
}

/// Reads transitions into `feed` until shutdown.
pub async fn follow(consumer: StreamConsumer, feed: JobFeed, shutdown: Shutdown) {
    loop {
        let message = tokio::select! {
            _ = shutdown.requested() => return,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => match m.payload().map(serde_json::from_slice::<Job>) {
                Some(Ok(job)) => feed.publish(job),
                _ => tracing::warn!(offset = m.offset(), "skipping an unreadable job transition"),
            },
            Err(e) => tracing::warn!(error = %e, "job-events consumer error"),
        }
    }
}

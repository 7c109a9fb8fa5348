//! Waiting out a dependency that is not there yet: one backoff for every
//! retry loop of the services (start-up, the processor's sink), and the
//! start-up step that keeps trying until its dependency answers.
//!
//! Invariant: a retry loop never outlives a shutdown request. Every pause
//! ends as soon as SIGTERM arrives, so a service waiting for a server that
//! is down still stops within its drain bound.

use std::future::Future;
use std::time::Duration;

use crate::ops::Readiness;
use crate::shutdown::Shutdown;

/// Waits before retry `attempt` (0.25 s doubling to 10 s); false when
/// shutdown was requested meanwhile.
pub async fn backoff(shutdown: &Shutdown, attempt: u32) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause(attempt)) => true,
        _ = shutdown.requested() => false,
    }
}

fn pause(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(6)).min(Duration::from_secs(10))
}

/// Runs start-up step `what` until it succeeds: a broker still starting, a
/// topic without a leader yet, a ClickHouse or registry not up are waited
/// for, never a reason to exit. Meanwhile `/readyz` says what the service
/// waits for. None when shutdown was requested first.
pub async fn until_done<T, E, F, Fut>(
    what: &str,
    readiness: &Readiness,
    shutdown: &Shutdown,
    mut step: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    readiness.wait_for(what);
    loop {
        match step().await {
            Ok(done) => return Some(done),
            Err(e) => {
                attempt += 1;
                let reason = format!("{what}: {e}");
                tracing::warn!(step = what, attempt, error = %e, "start-up step failed; retrying");
                readiness.wait_for(reason);
                if !backoff(shutdown, attempt).await {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn pauses_double_up_to_ten_seconds() {
        let ms: Vec<u128> = (0..9).map(|a| pause(a).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_is_retried_until_it_succeeds_and_readiness_says_why_meanwhile() {
        let (shutdown, _trigger) = Shutdown::new();
        let readiness = Readiness::default();
        let calls = AtomicU32::new(0);
        let seen = std::sync::Mutex::new(Vec::new());
        let done = until_done("Kafka", &readiness, &shutdown, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            seen.lock().unwrap().push(readiness.waiting_for());
            async move {
                if n < 2 {
                    Err(format!("broker down ({n})"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(done, Some(2));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Some("Kafka".to_string()),
                Some("Kafka: broker down (0)".to_string()),
                Some("Kafka: broker down (1)".to_string())
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let (shutdown, trigger) = Shutdown::new();
        let readiness = Readiness::default();
        let waiting = tokio::spawn({
            let (shutdown, readiness) = (shutdown.clone(), readiness.clone());
            async move {
                until_done("ClickHouse", &readiness, &shutdown, || async {
                    Err::<(), _>("connection refused")
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        trigger.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), None);
    }
}

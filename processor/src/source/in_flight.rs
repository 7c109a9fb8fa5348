//! Whether a batch's delivery is under way.
//!
//! A batch is delivered in a task of its own while the next one is decoded,
//! so the consumer is polled, and may be asked to give partitions up, while
//! a delivery still writes their rows and offsets. Giving a partition up
//! waits here until no delivery is in flight: its next owner then finds the
//! rows stored and the transaction settled, exactly as if the batches had
//! been handled one after the other.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Clone, Default)]
pub struct InFlight(Arc<Gate>);

#[derive(Default)]
struct Gate {
    deliveries: Mutex<usize>,
    idle: Condvar,
}

/// Held for as long as one delivery is under way.
pub(crate) struct Underway(Arc<Gate>);

impl Gate {
    fn count(&self) -> MutexGuard<'_, usize> {
        self.deliveries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InFlight {
    /// Marks a delivery as under way until the returned value is dropped.
    pub(crate) fn enter(&self) -> Underway {
        *self.0.count() += 1;
        Underway(self.0.clone())
    }

    /// Blocks until no delivery is under way.
    pub(crate) fn wait_idle(&self) {
        let mut count = self.0.count();
        while *count > 0 {
            count = self.0.idle.wait(count).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        *self.0.count() == 0
    }
}

impl Drop for Underway {
    fn drop(&mut self) {
        let mut count = self.0.count();
        *count -= 1;
        if *count == 0 {
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn waiting_ends_when_the_last_delivery_ends() {
        let gate = InFlight::default();
        let first = gate.enter();
        let second = gate.enter();
        let (done, waited) = mpsc::channel();
        let waiter = gate.clone();
        let thread = std::thread::spawn(move || {
            waiter.wait_idle();
            done.send(()).ok();
        });
        drop(first);
        assert!(!gate.is_idle());
        assert_eq!(
            waited.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "returned while a delivery was still under way"
        );
        drop(second);
        assert!(gate.is_idle());
        assert_eq!(waited.recv_timeout(Duration::from_secs(10)), Ok(()));
        thread.join().ok();
    }

    #[test]
    fn waiting_with_nothing_under_way_returns_at_once() {
        let gate = InFlight::default();
        drop(gate.enter());
        gate.wait_idle();
        assert!(gate.is_idle());
    }
}

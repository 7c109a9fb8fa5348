//! How far an attempt has got, read by the runner each second.

use std::sync::atomic::{AtomicU64, Ordering};

/// Units done so far (rows, snapshots), of how many.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn advance(&self, by: u64) {
        self.done.fetch_add(by, Ordering::Relaxed);
    }

    /// From 0 to 1; short of 1 until the job has ended.
    pub fn fraction(&self) -> f32 {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return 0.0;
        }
        let done = self.done.load(Ordering::Relaxed);
        ((done as f64 / total as f64).min(0.99)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_stays_short_of_done_until_the_end() {
        let progress = Progress::default();
        assert_eq!(progress.fraction(), 0.0);
        progress.set_total(4);
        progress.advance(1);
        assert_eq!(progress.fraction(), 0.25);
        progress.advance(3);
        assert_eq!(progress.fraction(), 0.99);
    }
}

//! How many live streams each tenant has open, capped per tenant so that
//! one tenant's dashboards cannot take every connection (and the memory of
//! their buffers) of an instance.
//!
//! Invariant: a tenant's count is the number of [`Slot`]s alive for it. A
//! slot is taken before the upgrade and dropped when the connection ends
//! however it ends (closed, dropped, or an upgrade that never completed),
//! so the count cannot leak.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

type Counts = Arc<Mutex<HashMap<String, usize>>>;

#[derive(Clone)]
pub struct StreamSlots {
    per_tenant: usize,
    open: Counts,
}

/// One open stream of a tenant; the slot is free again when this drops.
pub struct Slot {
    tenant: String,
    open: Counts,
}

fn lock(open: &Counts) -> MutexGuard<'_, HashMap<String, usize>> {
    // Counts are updated in one step each: a panic cannot leave one half done.
    open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StreamSlots {
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant,
            open: Counts::default(),
        }
    }

    /// The most streams a tenant may have open at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// A slot for a new stream of `tenant`, unless it has the most open.
    pub fn take(&self, tenant: &str) -> Option<Slot> {
        let mut open = lock(&self.open);
        let count = open.entry(tenant.to_string()).or_default();
        if *count >= self.per_tenant {
            return None;
        }
        *count += 1;
        Some(Slot {
            tenant: tenant.to_string(),
            open: self.open.clone(),
        })
    }

    /// Streams `tenant` has open now.
    pub fn open(&self, tenant: &str) -> usize {
        lock(&self.open).get(tenant).copied().unwrap_or_default()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_cap_and_closed_streams_free_their_slot() {
        let slots = StreamSlots::new(2);
        let a1 = slots.take("acme");
        let a2 = slots.take("acme");
        assert!(a1.is_some() && a2.is_some());
        assert!(slots.take("acme").is_none(), "a third stream of acme");
        assert!(slots.take("globex").is_some(), "globex has its own cap");
        drop(a1);
        assert_eq!(slots.open("acme"), 1);
        let a3 = slots.take("acme");
        assert!(a3.is_some());
        drop((a2, a3));
        assert_eq!(slots.open("acme"), 0);
        assert!(lock(&slots.open).is_empty(), "no tenant left behind");
    }
}

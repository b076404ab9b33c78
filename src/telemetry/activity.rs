//! A route's activity clock: when it last carried traffic (requests that worked, request
//! bodies, WebSocket bytes), so a hub's idle culler never stops a desktop in use.

use std::sync::atomic::{AtomicU64, Ordering};

/// When a runtime route last carried traffic, in Unix milliseconds.
#[derive(Default, Debug)]
pub struct Activity {
    last_ms: AtomicU64,
    /// The latest time the shared route store (Redis) is known to hold for this route: the
    /// activity sync pushes only later ones, comparing two numbers per route instead of
    /// keeping a map of every route's pushed time.
    stored_ms: AtomicU64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Activity {
    pub fn at(ms: u64) -> Activity {
        Activity {
            last_ms: AtomicU64::new(ms),
            stored_ms: AtomicU64::new(0),
        }
    }
    pub fn touch(&self) {
        self.touch_at(now_ms());
    }
    pub fn touch_at(&self, ms: u64) {
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }
    /// Keeps the later of the two (activity merged from elsewhere).
    pub fn merge(&self, ms: u64) {
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }
    /// The time to push to the shared store, if later than what it is known to hold.
    pub fn unstored(&self) -> Option<u64> {
        let last = self.last_ms();
        (last > self.stored_ms.load(Ordering::Relaxed)).then_some(last)
    }
    /// The shared store holds `ms` (or later) for this route.
    pub fn stored(&self, ms: u64) {
        self.stored_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

/// A route's clock as one connection touches it: at most once a second, so busy traffic costs
/// a comparison per chunk, not a store to a shared line. Callers pass the time they read once
/// per chunk (the admin page's session takes it too).
#[derive(Default)]
pub struct Toucher {
    clock: Option<std::sync::Arc<Activity>>,
    last_ms: u64,
}

impl Toucher {
    pub fn new(clock: Option<std::sync::Arc<Activity>>) -> Toucher {
        Toucher { clock, last_ms: 0 }
    }

    pub fn touch(&mut self, now_ms: u64) {
        let Some(clock) = &self.clock else { return };
        if now_ms >= self.last_ms + 1000 {
            self.last_ms = now_ms;
            clock.touch_at(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Activity;

    #[test]
    fn only_activity_later_than_the_store_holds_is_unstored() {
        let a = Activity::at(1_000);
        assert_eq!(a.unstored(), Some(1_000));
        a.stored(1_000);
        assert_eq!(a.unstored(), None);
        a.touch_at(2_000);
        assert_eq!(a.unstored(), Some(2_000));
        // Read back from the store (another edge's later traffic): nothing to push back.
        a.merge(3_000);
        a.stored(3_000);
        assert_eq!(a.unstored(), None);
        // An older confirmation does not undo a newer one.
        a.stored(2_000);
        assert_eq!(a.unstored(), None);
    }
}

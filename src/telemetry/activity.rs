//! A route's activity clock: when it last carried traffic (requests that worked, request
//! bodies, WebSocket bytes), so a hub's idle culler never stops a desktop in use.

use std::sync::atomic::{AtomicU64, Ordering};

/// When a runtime route last carried traffic, in Unix milliseconds.
#[derive(Default, Debug)]
pub struct Activity {
    last_ms: AtomicU64,
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

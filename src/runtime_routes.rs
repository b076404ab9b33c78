//! Routes the hub registers at run time (configurable-http-proxy API).
use std::sync::atomic::AtomicU64;

/// When a runtime route last carried traffic, in Unix milliseconds.
#[derive(Default, Debug)]
pub struct Activity {
    pub last_ms: AtomicU64,
}

impl Activity {
    pub fn touch(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.last_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

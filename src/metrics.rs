//! Prometheus metrics, rendered as text on the admin listener's `/metrics`.
//! Counters are plain atomics: the request path only does relaxed increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

pub static ROUTE_CHANGES: Counter = Counter::new();
pub static WEBSOCKETS_OPEN: Counter = Counter::new();
pub static WEBSOCKETS_TOTAL: Counter = Counter::new();
pub static WEBSOCKET_BYTES_UP: Counter = Counter::new();
pub static WEBSOCKET_BYTES_DOWN: Counter = Counter::new();

pub fn render(runtime_routes: usize) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    gauge("deskgate_runtime_routes", "Routes registered through the admin API.", "gauge", runtime_routes as u64);
    gauge("deskgate_route_changes_total", "Runtime route additions and deletions.", "counter", ROUTE_CHANGES.get());
    gauge("deskgate_websockets_open", "Upgraded connections open now.", "gauge", WEBSOCKETS_OPEN.get());
    gauge("deskgate_websockets_total", "Upgraded connections since start.", "counter", WEBSOCKETS_TOTAL.get());
    gauge("deskgate_websocket_bytes_up_total", "Bytes from clients to desktops on upgraded connections.", "counter", WEBSOCKET_BYTES_UP.get());
    gauge("deskgate_websocket_bytes_down_total", "Bytes from desktops to clients on upgraded connections.", "counter", WEBSOCKET_BYTES_DOWN.get());
    out
}

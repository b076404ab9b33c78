//! Prometheus metrics, rendered as text on the admin listener's `/metrics`.
//! Everything on the request path is a relaxed atomic increment: no locks, no allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
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

/// Requests of one route by status class (1xx..5xx).
#[derive(Default)]
pub struct RouteStats {
    by_class: [Counter; 5],
}

impl RouteStats {
    pub fn record(&self, status: u16) {
        if (100..600).contains(&status) {
            self.by_class[(status / 100 - 1) as usize].inc();
        }
    }
}

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub struct Histogram {
    buckets: [Counter; 12],
    count: Counter,
    sum_us: Counter,
}

impl Histogram {
    const fn new() -> Histogram {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: Counter = Counter::new();
        Histogram {
            buckets: [Z; 12],
            count: Counter::new(),
            sum_us: Counter::new(),
        }
    }
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_us.add(d.as_micros() as u64);
    }
}

pub static ROUTE_CHANGES: Counter = Counter::new();
pub static RUNTIME_ROUTE_STATS: once_cell::sync::Lazy<std::sync::Arc<RouteStats>> =
    once_cell::sync::Lazy::new(Default::default);
pub static NO_ROUTE: Counter = Counter::new();
pub static ACCESS_DENIED: Counter = Counter::new();
pub static ACCESS_LOG_DROPPED: Counter = Counter::new();
pub static WEBSOCKETS_OPEN: Counter = Counter::new();
pub static WEBSOCKETS_TOTAL: Counter = Counter::new();
pub static WEBSOCKET_BYTES_UP: Counter = Counter::new();
pub static WEBSOCKET_BYTES_DOWN: Counter = Counter::new();
pub static UPSTREAM_CONNECT_ERRORS: Counter = Counter::new();
pub static UPSTREAM_RETRIES: Counter = Counter::new();
pub static UPSTREAM_LATENCY: Histogram = Histogram::new();
pub static RELOADS_OK: Counter = Counter::new();
pub static RELOADS_FAILED: Counter = Counter::new();

pub struct Gauges {
    pub runtime_routes: usize,
    pub generation: u64,
    pub routes: Vec<(String, std::sync::Arc<RouteStats>)>,
    pub route_store: Option<bool>,
}

fn line(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(g: &Gauges) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(out, "# HELP deskgate_requests_total Requests answered, by route and status class.\n# TYPE deskgate_requests_total counter");
    for (label, stats) in g
        .routes
        .iter()
        .map(|(l, s)| (l.as_str(), s))
        .chain([("(runtime)", &*RUNTIME_ROUTE_STATS)])
    {
        for (i, c) in stats.by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "deskgate_requests_total{{route=\"{}\",class=\"{}xx\"}} {}",
                escape(label),
                i + 1,
                c.get()
            );
        }
    }
    let _ = writeln!(
        out,
        "deskgate_requests_total{{route=\"(none)\",class=\"4xx\"}} {}",
        NO_ROUTE.get()
    );
    let _ = writeln!(out, "# HELP deskgate_upstream_response_seconds Time from choosing an upstream to its response header.\n# TYPE deskgate_upstream_response_seconds histogram");
    let mut cumulative = 0;
    for (b, c) in LATENCY_BUCKETS.iter().zip(&UPSTREAM_LATENCY.buckets) {
        cumulative += c.get();
        let _ = writeln!(
            out,
            "deskgate_upstream_response_seconds_bucket{{le=\"{b}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "deskgate_upstream_response_seconds_bucket{{le=\"+Inf\"}} {}",
        UPSTREAM_LATENCY.count.get()
    );
    let _ = writeln!(
        out,
        "deskgate_upstream_response_seconds_sum {}",
        UPSTREAM_LATENCY.sum_us.get() as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "deskgate_upstream_response_seconds_count {}",
        UPSTREAM_LATENCY.count.get()
    );
    line(
        &mut out,
        "deskgate_websockets_open",
        "Upgraded connections open now.",
        "gauge",
        WEBSOCKETS_OPEN.get(),
    );
    line(
        &mut out,
        "deskgate_websockets_total",
        "Upgraded connections since start.",
        "counter",
        WEBSOCKETS_TOTAL.get(),
    );
    line(
        &mut out,
        "deskgate_websocket_bytes_up_total",
        "Bytes from clients to desktops on upgraded connections.",
        "counter",
        WEBSOCKET_BYTES_UP.get(),
    );
    line(
        &mut out,
        "deskgate_websocket_bytes_down_total",
        "Bytes from desktops to clients on upgraded connections.",
        "counter",
        WEBSOCKET_BYTES_DOWN.get(),
    );
    line(
        &mut out,
        "deskgate_upstream_connect_errors_total",
        "Failed connections to upstreams.",
        "counter",
        UPSTREAM_CONNECT_ERRORS.get(),
    );
    line(
        &mut out,
        "deskgate_upstream_retries_total",
        "Requests retried after a failed upstream connection.",
        "counter",
        UPSTREAM_RETRIES.get(),
    );
    line(
        &mut out,
        "deskgate_access_denied_total",
        "Requests denied by an access check.",
        "counter",
        ACCESS_DENIED.get(),
    );
    line(
        &mut out,
        "deskgate_runtime_routes",
        "Routes registered through the admin API.",
        "gauge",
        g.runtime_routes as u64,
    );
    line(
        &mut out,
        "deskgate_route_changes_total",
        "Runtime route additions and deletions.",
        "counter",
        ROUTE_CHANGES.get(),
    );
    line(
        &mut out,
        "deskgate_reloads_total",
        "Config reloads applied.",
        "counter",
        RELOADS_OK.get(),
    );
    line(
        &mut out,
        "deskgate_reload_failures_total",
        "Config reloads rejected (the old config kept serving).",
        "counter",
        RELOADS_FAILED.get(),
    );
    line(
        &mut out,
        "deskgate_config_generation",
        "Routing snapshot generation (moves on reloads and route changes).",
        "gauge",
        g.generation,
    );
    if let Some(up) = g.route_store {
        line(
            &mut out,
            "deskgate_route_store_up",
            "1 when the shared route store (Redis) is reachable.",
            "gauge",
            u64::from(up),
        );
    }
    out
}

//! Prometheus metrics (the `prometheus` crate, which Pingora offers too), rendered as text on
//! the admin listener's `/metrics`. On the request path every update is a relaxed atomic on a
//! handle taken once (a route keeps its own counters), so no label lookup, lock or allocation
//! happens per request.

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

static REGISTRY: Lazy<Registry> = Lazy::new(Registry::new);

fn registered<M: prometheus::core::Collector + Clone + 'static>(m: M) -> M {
    REGISTRY
        .register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

fn counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    registered(IntGauge::new(name, help).expect("valid metric"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

static REQUESTS: Lazy<IntCounterVec> = Lazy::new(|| {
    counter_vec(
        "deskgate_requests_total",
        "Requests answered, by route and status class.",
        &["route", "class"],
    )
});

static HANDSHAKE_FAILURES: Lazy<IntCounterVec> = Lazy::new(|| {
    counter_vec(
        "deskgate_tls_handshake_failures_total",
        "Refused or failed TLS handshakes on listeners, by reason.",
        &["reason"],
    )
});

static BAD_SNI: Lazy<IntCounterVec> = Lazy::new(|| {
    counter_vec(
        "deskgate_tls_bad_sni_total",
        "ClientHellos whose server name (SNI) was an IP address, no valid host name, or given twice.",
        &["kind"],
    )
});

/// `kind`: ip_address, invalid_name or duplicate (see `telemetry::log_noise`).
pub fn count_bad_sni(kind: &str) {
    BAD_SNI.with_label_values(&[kind]).inc();
}

pub fn count_handshake_failure(reason: &str) {
    HANDSHAKE_FAILURES.with_label_values(&[reason]).inc();
}

/// Requests of one route by status class (1xx..5xx); the handles are taken when the route is
/// built, and a route that comes back under the same label after a reload keeps counting.
pub struct RouteStats {
    by_class: [IntCounter; 5],
}

impl RouteStats {
    pub fn for_route(label: &str) -> RouteStats {
        let class = |c: &str| REQUESTS.with_label_values(&[label, c]);
        RouteStats {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
        }
    }

    pub fn record(&self, status: u16) {
        if (100..600).contains(&status) {
            self.by_class[(status / 100 - 1) as usize].inc();
        }
    }
}

pub static RUNTIME_ROUTE_STATS: Lazy<std::sync::Arc<RouteStats>> =
    Lazy::new(|| std::sync::Arc::new(RouteStats::for_route("(runtime)")));
pub static NO_ROUTE: Lazy<IntCounter> =
    Lazy::new(|| REQUESTS.with_label_values(&["(none)", "4xx"]));

pub static UPSTREAM_LATENCY: Lazy<Histogram> = Lazy::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "deskgate_upstream_response_seconds",
                "Time from choosing an upstream to its response header.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
        )
        .expect("valid metric"),
    )
});

/// Session quality (`telemetry::quality`): one observation per open session per sample, so a
/// histogram's rate of `_count` is sessions / `QUALITY_EVERY`; no per-session labels.
static SESSION_RTT: Lazy<prometheus::HistogramVec> = Lazy::new(|| {
    registered(
        prometheus::HistogramVec::new(
            HistogramOpts::new(
                "deskgate_websocket_rtt_seconds",
                "Smoothed TCP round-trip time of open WebSockets' legs (browser, desktop), sampled.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["leg"],
        )
        .expect("valid metric"),
    )
});
static SESSION_BACKLOG: Lazy<Histogram> = Lazy::new(|| {
    registered(
        Histogram::with_opts(
            HistogramOpts::new(
                "deskgate_websocket_backlog_bytes",
                "Bytes from desktops not yet taken by browsers, per open WebSocket, sampled.",
            )
            .buckets(vec![
                0.0, 4096.0, 16384.0, 65536.0, 262144.0, 524288.0, 1048576.0, 4194304.0, 16777216.0,
            ]),
        )
        .expect("valid metric"),
    )
});
static SESSIONS_BY_VERDICT: Lazy<prometheus::IntGaugeVec> = Lazy::new(|| {
    registered(
        prometheus::IntGaugeVec::new(
            Opts::new(
                "deskgate_websocket_sessions",
                "Open WebSockets by their last quality verdict (fine, browser_slow, desktop_slow, both_slow).",
            ),
            &["verdict"],
        )
        .expect("valid metric"),
    )
});

pub fn observe_session_quality(s: &crate::telemetry::quality::QualitySample) {
    SESSION_RTT
        .with_label_values(&["browser"])
        .observe(s.browser.rtt_us as f64 / 1e6);
    if let Some(d) = &s.desktop {
        SESSION_RTT
            .with_label_values(&["desktop"])
            .observe(d.rtt_us as f64 / 1e6);
    }
    SESSION_BACKLOG.observe(s.backlog_bytes as f64);
}

/// Counts in the order of `Verdict::ALL`.
pub fn set_sessions_by_verdict(counts: &[i64; 4]) {
    for (v, n) in crate::telemetry::quality::Verdict::ALL.iter().zip(counts) {
        SESSIONS_BY_VERDICT.with_label_values(&[v.code()]).set(*n);
    }
}

/// Declares the plain counters, and `ALL_COUNTERS` so a scrape shows each from the start.
macro_rules! counters {
    ($($id:ident = $name:literal, $help:literal;)*) => {
        $(pub static $id: Lazy<IntCounter> = Lazy::new(|| counter($name, $help));)*
        static ALL_COUNTERS: &[&Lazy<IntCounter>] = &[$(&$id),*];
    };
}

counters! {
    WEBSOCKETS_TOTAL = "deskgate_websockets_total", "Upgraded connections since start.";
    WEBSOCKET_BYTES_UP = "deskgate_websocket_bytes_up_total", "Bytes from clients to desktops on upgraded connections.";
    WEBSOCKET_BYTES_DOWN = "deskgate_websocket_bytes_down_total", "Bytes from desktops to clients on upgraded connections.";
    UPSTREAM_CONNECT_ERRORS = "deskgate_upstream_connect_errors_total", "Failed connections to upstreams.";
    UPSTREAM_RETRIES = "deskgate_upstream_retries_total", "Requests retried after a failed upstream connection.";
    ACCESS_DENIED = "deskgate_access_denied_total", "Requests denied by an access check.";
    ACCESS_LOG_DROPPED = "deskgate_access_log_dropped_total", "Access log lines dropped because the writer fell behind.";
    ROUTE_CHANGES = "deskgate_route_changes_total", "Runtime route additions and deletions.";
    RELOADS_OK = "deskgate_reloads_total", "Config reloads applied.";
    RELOADS_FAILED = "deskgate_reload_failures_total", "Config reloads rejected (the old config kept serving).";
    ACME_ISSUED = "deskgate_certificates_issued_total", "Certificates obtained through ACME.";
    ACME_FAILURES = "deskgate_acme_failures_total", "ACME orders that failed (retried with backoff).";
    TLS_SHUTDOWN_PEER_GONE = "deskgate_tls_shutdown_peer_gone_total", "TLS close_notify not written because the peer had already closed its connection (logged at debug).";
}

static CERT_EXPIRY: Lazy<prometheus::IntGaugeVec> = Lazy::new(|| {
    registered(
        prometheus::IntGaugeVec::new(
            Opts::new(
                "deskgate_certificate_expiry_seconds",
                "Seconds until an ACME certificate expires, by host.",
            ),
            &["host"],
        )
        .expect("valid metric"),
    )
});
/// notAfter (Unix seconds) of each ACME-managed host; the gauge is computed at scrape time.
static CERT_NOT_AFTER: Lazy<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> =
    Lazy::new(Default::default);

pub fn set_certificate_expiry(hosts: &[String], not_after: u64) {
    let mut m = CERT_NOT_AFTER.lock().expect("expiry lock");
    for h in hosts {
        m.insert(h.clone(), not_after);
    }
}

pub static WEBSOCKETS_OPEN: Lazy<IntGauge> =
    Lazy::new(|| gauge("deskgate_websockets_open", "Upgraded connections open now."));
static RUNTIME_ROUTES: Lazy<IntGauge> = Lazy::new(|| {
    gauge(
        "deskgate_runtime_routes",
        "Routes registered through the admin API.",
    )
});
static CONFIG_GENERATION: Lazy<IntGauge> = Lazy::new(|| {
    gauge(
        "deskgate_config_generation",
        "Routing snapshot generation (moves on reloads and route changes).",
    )
});
/// The smallest `max_connections` among listeners that set one (for "near the limit" alerts);
/// absent when none does.
static MAX_CONNECTIONS: Lazy<IntGauge> = Lazy::new(|| {
    gauge(
        "deskgate_max_connections",
        "The smallest max_connections among listeners that set one.",
    )
});

pub fn set_max_connections(limit: usize) {
    MAX_CONNECTIONS.set(limit as i64);
}

/// Registered only when a route store is configured.
static ROUTE_STORE_UP: Lazy<IntGauge> = Lazy::new(|| {
    gauge(
        "deskgate_route_store_up",
        "1 when the shared route store (Redis) is reachable.",
    )
});

/// Values read at scrape time.
pub struct Gauges {
    pub runtime_routes: usize,
    pub generation: u64,
    pub route_store: Option<bool>,
}

pub fn render(g: &Gauges) -> String {
    // Touch the metrics that have no update yet, so a fresh process shows them at 0.
    for c in ALL_COUNTERS {
        Lazy::force(c);
    }
    Lazy::force(&WEBSOCKETS_OPEN);
    Lazy::force(&UPSTREAM_LATENCY);
    Lazy::force(&RUNTIME_ROUTE_STATS);
    Lazy::force(&NO_ROUTE);
    Lazy::force(&HANDSHAKE_FAILURES);
    Lazy::force(&SESSION_BACKLOG);
    for leg in ["browser", "desktop"] {
        SESSION_RTT.with_label_values(&[leg]);
    }
    for v in crate::telemetry::quality::Verdict::ALL {
        SESSIONS_BY_VERDICT.with_label_values(&[v.code()]);
    }
    Lazy::force(&BAD_SNI);
    let now = crate::telemetry::activity::now_ms() / 1000;
    for (host, not_after) in CERT_NOT_AFTER.lock().expect("expiry lock").iter() {
        CERT_EXPIRY
            .with_label_values(&[host])
            .set(*not_after as i64 - now as i64);
    }
    RUNTIME_ROUTES.set(g.runtime_routes as i64);
    CONFIG_GENERATION.set(g.generation as i64);
    if let Some(up) = g.route_store {
        ROUTE_STORE_UP.set(i64::from(up));
    }
    let mut out = Vec::with_capacity(8192);
    let _ = TextEncoder::new().encode(&REGISTRY.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

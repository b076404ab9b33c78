//! Failed TLS handshakes on listeners, counted and sampled instead of one ERROR line each
//! (vendored pingora-core patch 13). A listener waiting for its first ACME certificate refuses
//! every handshake, and scanners and impatient clients fail them all day: each reason is
//! counted in `deskgate_tls_handshake_failures_total{reason}` and logged at most once per
//! `INTERVAL`, with how many were not logged.

use crate::telemetry::metrics;
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(60);

/// For each reason: when it was last logged, and how many since.
static LOGGED: Lazy<Mutex<HashMap<&'static str, (Instant, u64)>>> = Lazy::new(Default::default);

pub fn install() {
    pingora_core::services::listening::set_handshake_failure_hook(handshake_failed);
}

/// A reason for the metric label, and what an operator should read in the log.
pub fn classify(error: Option<&pingora::Error>) -> (&'static str, &'static str) {
    let Some(e) = error else {
        return ("timeout", "the client did not finish the handshake in time");
    };
    let text = format!("{e:?}").to_ascii_lowercase();
    if text.contains("no server certificate chain resolved") {
        (
            "no_certificate",
            "this listener has no certificate for the name yet (waiting for ACME?)",
        )
    } else if text.contains("alert") {
        (
            "client_alert",
            "the client rejected the handshake (an untrusted or unexpected certificate?)",
        )
    } else if text.contains("incompatible")
        || text.contains("nociphersuites")
        || text.contains("version")
    {
        (
            "incompatible",
            "the client offers no TLS version or cipher deskgate accepts",
        )
    } else if text.contains("eof")
        || text.contains("reset")
        || text.contains("closed")
        || text.contains("broken pipe")
    {
        (
            "closed",
            "the client closed the connection during the handshake",
        )
    } else if text.contains("corrupt")
        || text.contains("invalid")
        || text.contains("not tls")
        || text.contains("messages")
    {
        (
            "not_tls",
            "the client did not speak TLS (plain HTTP on a TLS port?)",
        )
    } else {
        ("other", "the handshake failed")
    }
}

fn handshake_failed(error: Option<&pingora::Error>, peer: Option<&dyn std::fmt::Display>) {
    let (reason, meaning) = classify(error);
    metrics::count_handshake_failure(reason);
    let now = Instant::now();
    let unlogged = {
        let mut logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner());
        match logged.get_mut(reason) {
            Some((at, count)) if now.duration_since(*at) < INTERVAL => {
                *count += 1;
                return;
            }
            Some((at, count)) => {
                *at = now;
                std::mem::take(count)
            }
            None => {
                logged.insert(reason, (now, 0));
                0
            }
        }
    };
    let peer = peer.map_or(String::new(), |p| format!(" from {p}"));
    let detail = error.map_or(String::new(), |e| format!(": {e}"));
    let more = if unlogged > 0 {
        format!(" ({unlogged} more since the last such line)")
    } else {
        String::new()
    };
    let line = format!(
        "TLS handshake refused{peer}, {reason}: {meaning}{detail}{more}; logged at most once a minute, counted in deskgate_tls_handshake_failures_total"
    );
    if reason == "no_certificate" || reason == "other" {
        log::warn!("{line}");
    } else {
        log::info!("{line}");
    }
}

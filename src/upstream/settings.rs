//! Plain settings and helpers for reaching upstreams: TLS toward a peer, timeouts, addresses,
//! Basic auth. Everything above (`Upstream`, balancing, the hub client, config) builds on these.

use base64::Engine;
use http::HeaderValue;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub verify: bool,
    pub sni: String,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub upgraded_idle: Duration,
    pub client_header: Duration,
    /// How long open connections (desktops) may drain after SIGTERM or an upgrade hand-over.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            upgraded_idle: Duration::from_secs(3600),
            client_header: Duration::from_secs(10),
            drain: Duration::from_secs(60),
        }
    }
}

/// `ip:port` directly, or a `host:port` (compose service names) through the async resolver:
/// Pingora's `HttpPeer::new(&str)` would resolve on the worker thread and panic on failure.
pub async fn resolve(server: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = server.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(server)
        .await
        .map_err(|e| format!("cannot resolve {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("{server} resolves to no address"))
}

pub fn basic_authorization(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

/// The host part of `host:port` or `[v6]:port` (without brackets).
pub fn host_of(server: &str) -> &str {
    if let Some(rest) = server.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server.rsplit_once(':').map_or(server, |(h, _)| h)
}

/// Checks `host:port` (or `[v6]:port`), adding `default_port` when none is given.
pub fn with_default_port(authority: &str, default_port: u16) -> Result<String, String> {
    if authority.is_empty() {
        return Err("expected `host:port`, found nothing".into());
    }
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    let full = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let port = full.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    port.parse::<u16>()
        .map_err(|_| format!("expected `host:port` with a numeric port, found `{authority}`"))?;
    if host_of(&full).is_empty() {
        return Err(format!("expected `host:port`, found `{authority}`"));
    }
    Ok(full)
}

//! Upstream servers and the Pingora peers that reach them: addresses, TLS toward
//! self-signed desktops (verification off for those peers only), injected Basic auth, timeouts.

use crate::config::Timeouts;
use base64::Engine;
use http::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct UpstreamTls {
    pub verify: bool,
    pub sni: String,
}

pub struct Upstream {
    pub name: String,
    pub servers: Vec<String>,
    pub tls: Option<UpstreamTls>,
    /// Precomputed `Basic ...` value; marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
    pub retries: u32,
    /// Several servers: selection, health and marking-down (`balance`).
    pub pool: Option<crate::balance::Pool>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({} -> {})", self.name, self.describe())
    }
}

impl Upstream {
    pub fn new(
        name: &str,
        servers: Vec<String>,
        tls: Option<UpstreamTls>,
        authorization: Option<HeaderValue>,
        retries: u32,
    ) -> Upstream {
        Upstream {
            name: name.to_string(),
            servers,
            tls,
            authorization,
            retries,
            pool: None,
        }
    }

    pub fn plain(name: &str, server: &str) -> Upstream {
        Upstream::new(name, vec![server.to_string()], None, None, 0)
    }

    /// An upstream for a target URL (`https://127.0.0.1:7001`, `http://hub:5020`, or bare
    /// `ip:port` meaning `tls_default`), as runtime and resolver routes give them.
    pub fn from_target(
        name: &str,
        target: &str,
        tls_default: Option<UpstreamTls>,
        authorization: Option<HeaderValue>,
    ) -> Result<Upstream, String> {
        let (tls, rest) = if let Some(r) = target
            .strip_prefix("https://")
            .or_else(|| target.strip_prefix("wss://"))
        {
            (
                Some(tls_default.unwrap_or(UpstreamTls {
                    verify: true,
                    sni: String::new(),
                })),
                r,
            )
        } else if let Some(r) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("ws://"))
        {
            (None, r)
        } else {
            (tls_default, target)
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let server = with_default_port(authority, if tls.is_some() { 443 } else { 80 })?;
        let tls = tls.map(|mut t| {
            if t.sni.is_empty() {
                t.sni = host_of(&server).to_string();
            }
            t
        });
        Ok(Upstream::new(name, vec![server], tls, authorization, 0))
    }

    pub fn describe(&self) -> String {
        format!(
            "{}://{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.servers.join(",")
        )
    }

    /// The server for one attempt: the only one, or the pool's choice among healthy servers not
    /// yet `tried` (`key` feeds `balance: hash`).
    pub fn choose(
        &self,
        key: &[u8],
        tried: &[std::net::SocketAddr],
    ) -> Option<(String, Option<crate::balance::InFlight>)> {
        match &self.pool {
            None => Some((self.servers[0].clone(), None)),
            Some(pool) => pool
                .pick(key, tried)
                .map(|(addr, guard)| (addr.to_string(), Some(guard))),
        }
    }

    /// The peer for one attempt; `upgrade` requests get the idle limit instead of the HTTP read
    /// timeout (cloudflare/pingora#255: the read timeout would cut quiet desktops).
    pub async fn peer(
        &self,
        server: &str,
        timeouts: &Timeouts,
        upgrade: bool,
    ) -> Result<Box<HttpPeer>, String> {
        let addr = resolve(server).await?;
        let (tls, sni) = match &self.tls {
            Some(t) => (true, t.sni.clone()),
            None => (false, String::new()),
        };
        let mut peer = Box::new(HttpPeer::new(addr, tls, sni));
        let o = &mut peer.options;
        o.connection_timeout = Some(timeouts.connect);
        o.total_connection_timeout = Some(timeouts.connect);
        o.read_timeout = Some(if upgrade {
            timeouts.upgraded_idle
        } else {
            timeouts.read
        });
        o.write_timeout = Some(if upgrade {
            timeouts.upgraded_idle
        } else {
            timeouts.read
        });
        o.idle_timeout = Some(Duration::from_secs(60));
        if let Some(t) = &self.tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
        }
        Ok(peer)
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

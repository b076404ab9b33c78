//! Upstream servers and the Pingora peers that reach them: addresses, TLS toward
//! self-signed desktops (verification off for those peers only), injected Basic auth, timeouts.

pub mod balance;
pub mod client;
pub mod health;
pub mod settings;

use http::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use settings::{host_of, resolve, with_default_port, AddressError, Timeouts, UpstreamTls};

pub struct Upstream {
    pub name: String,
    pub servers: Vec<String>,
    pub tls: Option<UpstreamTls>,
    /// Precomputed `Basic ...` value; marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
    pub retries: u32,
    /// Several servers: selection, health and marking-down (`balance`).
    pub pool: Option<crate::upstream::balance::Pool>,
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
    ) -> Result<Upstream, AddressError> {
        let (tls, rest) = if let Some(r) = target
            .strip_prefix("https://")
            .or_else(|| target.strip_prefix("wss://"))
        {
            (
                Some(tls_default.unwrap_or(UpstreamTls {
                    verify: true,
                    ..UpstreamTls::default()
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
    ) -> Option<(String, Option<crate::upstream::balance::InFlight>)> {
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
    ) -> Result<Box<HttpPeer>, AddressError> {
        // An address needs no lookup; only names (compose services) await the resolver, boxed
        // so the common path's future stays small (Pingora copies it per request).
        let addr = match server.parse() {
            Ok(addr) => addr,
            Err(_) => Box::pin(resolve(server)).await?,
        };
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
        o.idle_timeout = Some(timeouts.upstream_keepalive);
        if let Some(t) = &self.tls {
            o.verify_cert = t.verify;
            o.verify_hostname = t.verify;
            if let Some(id) = &t.identity {
                o.ca = id.ca.clone();
                peer.client_cert_key = id.client.clone();
            }
        }
        Ok(peer)
    }
}

//! Upstreams with several servers, on pingora-load-balancing: the choice of server
//! (`round_robin`, `least_conn`, `hash` by client address, header or cookie, so a user's
//! reconnects land on the same desktop host), active health checks (HTTP or TCP), passive
//! marking-down after connect failures, and the next healthy server for a retry.

use crate::upstream::settings::UpstreamTls;
use http::{HeaderName, HeaderValue};
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server that refused a connection is skipped when no health check says otherwise.
const PASSIVE_DOWN: Duration = Duration::from_secs(10);
/// Selection attempts before giving up on finding a healthy server.
const MAX_ITERATIONS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    ClientAddr,
    Header(HeaderName),
    Cookie(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastConn,
    Hash(HashKey),
}

/// Why `balance:`/`hash_key:` or the servers of a pool do not make a pool.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("balance is round_robin, least_conn or hash, found `{found}`")]
    Policy { found: String },
    #[error("hash_key is `client_addr`, `header:NAME` or `cookie:NAME`, found `{found}`")]
    HashKey { found: String },
    #[error("`{name}` is not a header name")]
    HashHeader {
        name: String,
        source: http::header::InvalidHeaderName,
    },
    #[error("cannot resolve servers: {0}")]
    Servers(#[source] std::io::Error),
}

impl Policy {
    pub fn parse(balance: Option<&str>, hash_key: Option<&str>) -> Result<Policy, BalanceError> {
        match balance.unwrap_or("round_robin") {
            "round_robin" => Ok(Policy::RoundRobin),
            "least_conn" => Ok(Policy::LeastConn),
            "hash" => {
                let key = match hash_key.unwrap_or("client_addr") {
                    "client_addr" => HashKey::ClientAddr,
                    k if k.starts_with("header:") => {
                        let name = &k[7..];
                        let header =
                            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|source| {
                                BalanceError::HashHeader {
                                    name: name.to_string(),
                                    source,
                                }
                            })?;
                        HashKey::Header(header)
                    }
                    k if k.starts_with("cookie:") => HashKey::Cookie(k[7..].trim().to_string()),
                    k => {
                        return Err(BalanceError::HashKey {
                            found: k.to_string(),
                        })
                    }
                };
                Ok(Policy::Hash(key))
            }
            other => Err(BalanceError::Policy {
                found: other.to_string(),
            }),
        }
    }
}

#[derive(Clone, Debug)]
pub enum HealthProbe {
    Http { path: String },
    Tcp,
}

#[derive(Clone, Debug)]
pub struct HealthSpec {
    pub probe: HealthProbe,
    pub interval: Duration,
}

pub struct Pool {
    policy: Policy,
    round_robin: LoadBalancer<RoundRobin>,
    consistent: Option<LoadBalancer<Consistent>>,
    in_flight: HashMap<SocketAddr, Arc<AtomicUsize>>,
    passive_down: Mutex<HashMap<SocketAddr, Instant>>,
    pub health: Option<HealthSpec>,
    last_check: Mutex<Option<Instant>>,
}

/// Held while a request or WebSocket uses a server (least_conn counts these).
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    match &b.addr {
        PingoraAddr::Inet(a) => Some(*a),
        _ => None,
    }
}

impl Pool {
    pub fn new(
        servers: &[String],
        policy: Policy,
        health: Option<HealthSpec>,
        tls: Option<&UpstreamTls>,
        authorization: Option<&HeaderValue>,
    ) -> Result<Pool, BalanceError> {
        let round_robin =
            LoadBalancer::<RoundRobin>::try_from_iter(servers.iter().map(String::as_str))
                .map_err(BalanceError::Servers)?;
        let consistent = match policy {
            Policy::Hash(_) => Some(
                LoadBalancer::<Consistent>::try_from_iter(servers.iter().map(String::as_str))
                    .map_err(BalanceError::Servers)?,
            ),
            _ => None,
        };
        let in_flight = round_robin
            .backends()
            .get_backend()
            .iter()
            .filter_map(inet)
            .map(|a| (a, Arc::new(AtomicUsize::new(0))))
            .collect();
        let mut pool = Pool {
            policy,
            round_robin,
            consistent,
            in_flight,
            passive_down: Mutex::new(HashMap::new()),
            health: health.clone(),
            last_check: Mutex::new(None),
        };
        if let Some(h) = &health {
            pool.install_health_check(&h.probe, tls, authorization);
        }
        Ok(pool)
    }

    fn install_health_check(
        &mut self,
        probe: &HealthProbe,
        tls: Option<&UpstreamTls>,
        authorization: Option<&HeaderValue>,
    ) {
        let make = || -> Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync> {
            match probe {
                HealthProbe::Tcp => match tls {
                    Some(t) => {
                        let mut hc = TcpHealthCheck::new_tls(&t.sni);
                        hc.peer_template.options.verify_cert = t.verify;
                        hc.peer_template.options.verify_hostname = t.verify;
                        hc
                    }
                    None => TcpHealthCheck::new(),
                },
                HealthProbe::Http { path } => {
                    let host = tls.map_or("localhost", |t| t.sni.as_str());
                    let mut hc = HttpHealthCheck::new(host, tls.is_some());
                    if let Some(t) = tls {
                        hc.peer_template.options.verify_cert = t.verify;
                        hc.peer_template.options.verify_hostname = t.verify;
                    }
                    hc.peer_template.options.connection_timeout = Some(Duration::from_secs(2));
                    hc.peer_template.options.read_timeout = Some(Duration::from_secs(2));
                    let _ = hc
                        .req
                        .set_uri(path.parse().unwrap_or_else(|_| http::Uri::from_static("/")));
                    if let Some(a) = authorization {
                        let _ = hc.req.insert_header(http::header::AUTHORIZATION, a.clone());
                    }
                    Box::new(hc)
                }
            }
        };
        self.round_robin.set_health_check(make());
        if let Some(c) = &mut self.consistent {
            c.set_health_check(make());
        }
    }

    /// Runs the health checks if their interval has passed (called every second).
    pub async fn maybe_check_health(&self) {
        let Some(spec) = &self.health else { return };
        {
            let mut last = self.last_check.lock().expect("health lock");
            if last.is_some_and(|t| t.elapsed() < spec.interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.round_robin.backends().run_health_check(true).await;
        if let Some(c) = &self.consistent {
            c.backends().run_health_check(true).await;
        }
    }

    pub fn mark_down(&self, server: SocketAddr) {
        self.passive_down
            .lock()
            .expect("passive lock")
            .insert(server, Instant::now() + PASSIVE_DOWN);
    }

    fn usable(
        &self,
        addr: SocketAddr,
        healthy: bool,
        tried: &[SocketAddr],
        down: &HashMap<SocketAddr, Instant>,
        now: Instant,
    ) -> bool {
        healthy && !tried.contains(&addr) && down.get(&addr).is_none_or(|until| now >= *until)
    }

    /// A healthy server not tried yet for this request; `key` is the hash input.
    pub fn pick(&self, key: &[u8], tried: &[SocketAddr]) -> Option<(SocketAddr, InFlight)> {
        // Held (not copied) for the selection: it is short and never awaits.
        let down = self.passive_down.lock().expect("passive lock");
        let now = Instant::now();
        let chosen = match &self.policy {
            Policy::RoundRobin => self
                .round_robin
                .select_with(b"", MAX_ITERATIONS, |b, healthy| {
                    inet(b).is_some_and(|a| self.usable(a, healthy, tried, &down, now))
                })
                .and_then(|b| inet(&b)),
            Policy::Hash(_) => self
                .consistent
                .as_ref()
                .and_then(|c| {
                    c.select_with(key, MAX_ITERATIONS, |b, healthy| {
                        inet(b).is_some_and(|a| self.usable(a, healthy, tried, &down, now))
                    })
                })
                .and_then(|b| inet(&b)),
            Policy::LeastConn => {
                let backends = self.round_robin.backends();
                backends
                    .get_backend()
                    .iter()
                    .filter(|b| {
                        inet(b)
                            .is_some_and(|a| self.usable(a, backends.ready(b), tried, &down, now))
                    })
                    .filter_map(inet)
                    .min_by_key(|a| {
                        self.in_flight
                            .get(a)
                            .map_or(0, |c| c.load(Ordering::Relaxed))
                    })
            }
        }?;
        let counter = self.in_flight.get(&chosen).cloned().unwrap_or_default();
        counter.fetch_add(1, Ordering::Relaxed);
        Some((chosen, InFlight(counter)))
    }

    /// (healthy, all) servers, for the admin page.
    pub fn health(&self) -> (usize, usize) {
        let backends = self.round_robin.backends();
        let all = backends.get_backend();
        let healthy = all.iter().filter(|b| backends.ready(b)).count();
        (healthy, all.len())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What `balance: hash` hashes for a request (its client address, a header or a cookie);
    /// empty for the other policies and for requests without the key. `client` is asked only
    /// when the key is the client address.
    pub fn request_key(
        &self,
        headers: &http::HeaderMap,
        client: impl FnOnce() -> Option<std::net::IpAddr>,
    ) -> Vec<u8> {
        let Policy::Hash(key) = &self.policy else {
            return Vec::new();
        };
        match key {
            HashKey::ClientAddr => client()
                .map(|ip| ip.to_string().into_bytes())
                .unwrap_or_default(),
            HashKey::Header(name) => headers
                .get(name)
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
            HashKey::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    kv.trim()
                        .strip_prefix(name.as_str())
                        .and_then(|r| r.strip_prefix('='))
                })
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }
}

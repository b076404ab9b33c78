//! The validated configuration: plain data, built by `config` from the YAML and read by
//! `runtime` (which builds the running objects from it) and `server` (addresses, threads).
//! Nothing here opens a socket, reads a certificate or starts a task.

use super::span::SpanIndex;
use super::ConfigError;
use crate::routing::{HostPattern, PathPattern, Template, WebSocketSettings};
use crate::support::secret::Secret;
use crate::upstream::balance::{HealthSpec, Policy};
use crate::upstream::settings::{Timeouts, UpstreamTls};
use http::HeaderValue;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub struct Config {
    pub file: String,
    pub listeners: Vec<Listener>,
    pub upstreams: HashMap<String, UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    pub timeouts: Timeouts,
    pub admin: Option<AdminSettings>,
    pub dynamic: DynamicSpec,
    pub state_file: Option<PathBuf>,
    /// Where several edges share their runtime routes (Redis, or Redis found by Sentinel).
    pub route_store: Option<RouteStoreSpec>,
    pub threads: usize,
    /// Pingora's `work_stealing`: one multi-thread runtime (true) or one single-thread runtime
    /// per worker (false).
    pub work_stealing: bool,
    pub pid_file: Option<PathBuf>,
    pub access_log: Option<(AccessLogFormat, String)>,
    pub log_level: Option<String>,
    pub max_header_bytes: usize,
    /// One request header field, `Name: value`.
    pub max_header_field_bytes: usize,
    /// Idle upstream connections kept for reuse, across all upstreams.
    pub upstream_keepalive_connections: usize,
    pub proxy_headers: ProxyHeaders,
    pub error_pages: ErrorPagesSpec,
    /// A listener serving only `/metrics` (besides the admin listener's).
    pub metrics_addr: Option<String>,
    /// The top-level `websocket:` block (each route's defaults).
    pub websocket: WebSocketSettings,
    /// Where each YAML path (`routes[2].upstream`) sits in the file.
    pub(super) spans: SpanIndex,
}

impl Config {
    /// A problem found after validation (a certificate that does not load, a server name that
    /// does not resolve), placed at the YAML path it came from (`listeners[0].tls.certs[1].cert`).
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let pos = self.spans.find(path);
        ConfigError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            cause: None,
        }
    }
}

pub struct Listener {
    pub addr: String,
    pub redirect_https: bool,
    /// `redirect_to`: the origin (no trailing `/`) every request is redirected to.
    pub redirect_to: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub tls: Option<Vec<CertificateSpec>>,
    /// Certificates obtained and renewed through ACME (`tls.acme`).
    pub acme: Option<AcmeSpec>,
    /// The `Strict-Transport-Security` value this TLS listener adds (`tls.hsts`).
    pub hsts: Option<String>,
    /// Client certificates verified against a CA (`tls.client_ca`).
    pub client_auth: Option<ClientAuthSpec>,
}

/// Mutual TLS on a listener: the CA client certificates must chain to, and whether a client
/// without one is turned away (`required`) or served without a subject (`optional`).
#[derive(Clone, Debug)]
pub struct ClientAuthSpec {
    pub at: String,
    pub ca: PathBuf,
    pub required: bool,
}

/// A listener certificate as configured: files, the hosts it is chosen for by SNI.
pub struct CertificateSpec {
    /// Its YAML path, for errors found when it is loaded.
    pub at: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Host names (exact or `*.suffix`), lowercase.
    pub hosts: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeKind {
    Http01,
    TlsAlpn01,
    Dns01,
}

impl ChallengeKind {
    pub fn parse(s: &str) -> Option<ChallengeKind> {
        match s {
            "http-01" => Some(ChallengeKind::Http01),
            "tls-alpn-01" => Some(ChallengeKind::TlsAlpn01),
            "dns-01" => Some(ChallengeKind::Dns01),
            _ => None,
        }
    }
}

/// A listener's `acme:` block.
#[derive(Clone)]
pub struct AcmeSpec {
    pub at: String,
    pub directory: String,
    /// `mailto:` addresses for the account.
    pub contact: Vec<String>,
    pub hosts: Vec<String>,
    pub storage: PathBuf,
    pub challenge: ChallengeKind,
    /// A CA certificate (PEM) to trust for the directory's HTTPS, for test CAs such as pebble.
    pub directory_ca: Option<PathBuf>,
    /// Renew once the certificate is this old, instead of at 2/3 of its lifetime.
    pub renew_after: Option<Duration>,
    pub dns01: Option<Rfc2136Spec>,
}

/// DNS-01 through RFC 2136 updates signed with a TSIG key read from `tsig_key_file`.
#[derive(Clone)]
pub struct Rfc2136Spec {
    pub server: String,
    /// Lowercase, without the trailing dot.
    pub zone: String,
    pub tsig_key_file: PathBuf,
}

pub struct AdminSettings {
    pub addr: String,
    /// None only with `open: true`: anyone who reaches the address may change routes.
    pub token: Option<Secret>,
    /// HTTPS on the admin listener (`admin.tls`), with client certificates when `client_auth`.
    pub tls: Option<CertificateSpec>,
    pub client_auth: Option<ClientAuthSpec>,
}

/// An entry under `upstreams:`.
pub struct UpstreamSpec {
    pub at: String,
    pub servers: Vec<String>,
    pub tls: Option<UpstreamTls>,
    /// Precomputed `Basic ...` value; marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
    pub retries: u32,
    /// Set when the upstream balances (several servers, `balance:` or `health:`).
    pub pool: Option<PoolSpec>,
}

pub struct PoolSpec {
    pub policy: Policy,
    pub health: Option<HealthSpec>,
}

/// An entry under `routes:`.
pub struct RouteSpec {
    pub at: String,
    /// How responses and logs name this route (`Route::label_for`).
    pub label: String,
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    /// Placeholder names the host and path capture (`{name}`, `{user}`...).
    pub captures: Vec<String>,
    pub upstream: UpstreamChoice,
    pub strip_prefix: bool,
    pub block: Vec<String>,
    pub novnc: bool,
    pub access: Option<AccessSpec>,
    pub fallback_redirect: Option<String>,
    pub drop_websocket_protocol: bool,
    pub forward_cookies: bool,
    pub response_rewrite: Option<std::sync::Arc<crate::routing::response_rewrite::ResponseRewrite>>,
    /// The top-level `websocket:` keys with this route's own on top.
    pub websocket: WebSocketSettings,
}

/// How a route names its upstream.
pub enum UpstreamChoice {
    /// One of `upstreams:` (checked to exist).
    Named(String),
    /// A name filled from captures, looked up among `upstreams:` per request (`desktop-{name}`).
    Template(Template),
    /// Asked of the hub per name (`{ resolve: URL }`).
    Resolve(ResolverSpec),
}

pub struct ResolverSpec {
    /// The hub URL with `{placeholders}`.
    pub url: String,
    pub cache: Duration,
    /// Headers sent to the hub (an API key), read from their files or environment.
    pub headers: Vec<(String, Secret)>,
    /// TLS toward the desktops it finds (bare `ip:port` answers).
    pub tls: Option<UpstreamTls>,
    pub authorization: Option<HeaderValue>,
}

/// An access check (`auth:`): the hub URL with `{placeholders}`, the request headers to
/// forward, the answer's headers to copy upstream, how long answers are kept, and where to
/// send a denied browser.
#[derive(Clone, Debug)]
pub struct AccessSpec {
    pub url: String,
    pub forward: Vec<String>,
    pub copy: Vec<String>,
    pub cache: Duration,
    pub deny_redirect: Option<String>,
}

/// Settings for routes the hub registers at run time (the `dynamic:` block).
#[derive(Clone)]
pub struct DynamicSpec {
    pub tls: Option<UpstreamTls>,
    pub authorization: Option<HeaderValue>,
    pub block: Vec<String>,
    pub access: Option<AccessSpec>,
    pub novnc: bool,
    pub strip_prefix: bool,
    /// A target URL's path goes in front of the request path (configurable-http-proxy's
    /// default; `--no-prepend-path` turns it off).
    pub prepend_path: bool,
    /// Every route's first segment is a host (`/alice.hub.test/...`), as with
    /// configurable-http-proxy's `--host-routing`; without it, only a first segment with a dot is.
    pub host_routing: bool,
    /// The top-level `websocket:` block (runtime routes have none of their own).
    pub websocket: WebSocketSettings,
}

impl Default for DynamicSpec {
    fn default() -> Self {
        DynamicSpec {
            tls: None,
            authorization: None,
            block: Vec::new(),
            access: None,
            novnc: false,
            strip_prefix: false,
            prepend_path: true,
            host_routing: false,
            websocket: WebSocketSettings::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
}

/// How `X-Forwarded-*` headers are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XForwarded {
    /// deskgate is the edge: `-For` appended, `-Proto` and `-Host` set from what it saw.
    #[default]
    Set,
    /// Behind another proxy, as configurable-http-proxy does it: `-For`, `-Port` and `-Proto`
    /// appended, `-Host` set only when absent.
    Append,
    Off,
}

/// Request headers every proxied request gets (the `proxy_headers:` block).
#[derive(Clone, Debug, Default)]
pub struct ProxyHeaders {
    pub x_forwarded: XForwarded,
    /// Added to (replacing) the request's own (`--custom-header` in `deskgate chp`).
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Removed from every proxied request: a browser must not be able to send what the
    /// backend takes as the edge's word (`X-Forwarded-User`, `Remote-User`).
    pub remove: Vec<http::HeaderName>,
}

/// The `errors:` block: where error pages come from.
#[derive(Clone, Debug, Default)]
pub struct ErrorPagesSpec {
    /// `http(s)://host:port/base/`: asked for `<base>/<code>?url=...`.
    pub target: Option<String>,
    /// A folder with `<code>.html` and/or `error.html`.
    pub dir: Option<PathBuf>,
    /// The status for a failed upstream instead of 502/504 (configurable-http-proxy: 503).
    pub upstream_status: Option<u16>,
}

/// `route_store:`: one Redis, or the primary that Redis Sentinel names.
#[derive(Debug, Clone)]
pub struct RouteStoreSpec {
    pub key_prefix: String,
    pub backend: StoreBackend,
}

#[derive(Debug, Clone)]
pub enum StoreBackend {
    Redis { url: String },
    Sentinel(SentinelSpec),
}

#[derive(Debug, Clone)]
pub struct SentinelSpec {
    /// The name the sentinels monitor (`sentinel monitor NAME …`).
    pub master: String,
    /// The sentinels, as `(host, port)`.
    pub addrs: Vec<(String, u16)>,
    /// The Redis nodes' password (`requirepass`/`masterauth`).
    pub password: Option<crate::support::secret::Secret>,
    /// The sentinels' own password, when they have one.
    pub sentinel_password: Option<crate::support::secret::Secret>,
    /// A write is acknowledged only once this many replicas have it (`WAIT`): 0 answers as soon
    /// as the primary has it, and a failover may then lose it.
    pub ack_replicas: usize,
    pub ack_timeout: std::time::Duration,
}

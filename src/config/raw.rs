//! The YAML surface, exactly as operators write it. Only `config::load` reads these types;
//! the rest of deskgate sees the validated model in `config::model`.

use super::duration::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<RawListener>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    #[serde(default, skip_serializing_if = "RawTimeouts::is_unset")]
    pub timeouts: RawTimeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<RawAdmin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<RawDynamic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_store: Option<RawRouteStore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<RawLog>,
    /// Worker threads: a number, or `auto` (one per core; the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<RawThreads>,
    /// Workers take ready connections from each other (tokio's multi-thread scheduler, with its
    /// LIFO slot; Pingora's default), or each worker is a runtime of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_stealing: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// Largest request header section accepted (bytes); larger gets 431. Default 64 KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_header_field_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_headers: Option<RawProxyHeaders>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<RawErrors>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawMetrics>,
    /// Defaults for every route's `websocket:` block (runtime routes included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<RawWebSocket>,
}

/// `websocket:` at the top level (defaults) and per route.
#[derive(Deserialize, Serialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    /// The close code sent to the browser for a desktop lost mid-session, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_on_desktop_loss: Option<RawCloseCode>,
    /// The cap on the desktop -> browser direction of each session (`8MiB/s`, `none`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<super::size::RawSize>,
    /// The bucket of that cap (`1MiB`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<super::size::RawSize>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(untagged)]
pub enum RawCloseCode {
    Code(i64),
    Word(String),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyHeaders {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x_forwarded: Option<RawXForwarded>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Request headers never passed on (Apache's `RequestHeader unset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawXForwarded {
    Set,
    Append,
    Off,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub addr: String,
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawThreads {
    Count(usize),
    Word(String),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteStore {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<RawSentinel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// `route_store: { sentinel: … }`: the primary found through Redis Sentinel.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel_password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_replicas: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub addr: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redirect_https: bool,
    /// A plain listener that redirects everything to this fixed origin (`https://hub.example`),
    /// path and query appended (Apache's `Redirect / https://hub.example/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawListenerTls>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<RawCert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<RawAcme>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts: Option<RawHsts>,
    /// CA certificates (PEM) client certificates must chain to: mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// `required` (the default with `client_ca`) or `optional`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<String>,
}

/// `Strict-Transport-Security` on every answer of a TLS listener.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    pub max_age: HumanDuration,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_subdomains: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preload: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub storage: PathBuf,
    /// http-01 (default) | tls-alpn-01 | dns-01
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// A CA (PEM) to trust for the directory's HTTPS (test CAs such as pebble).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_after: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns01: Option<RawDns01>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns01 {
    pub rfc2136: RawRfc2136,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    /// `ip:port` of the primary name server.
    pub server: String,
    pub zone: String,
    /// A TSIG key as `tsig-keygen` writes it.
    pub tsig_key_file: PathBuf,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<RawBasicAuth>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// round_robin (default), least_conn or hash
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    /// For `balance: hash`: client_addr (default), `header:NAME` or `cookie:NAME`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<RawHealth>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path for an HTTP check (2xx = healthy); without it, a TCP (and TLS) connect check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tcp: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// A private CA (PEM) to verify the upstream against, instead of the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A certificate and key (PEM) to present: mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

/// A secret header value: `{ env: NAME }` or `{ file: PATH }`, never the value itself.
#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSecretRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<RawUpstreamRef>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub novnc: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<RawFallback>,
    /// Test-only: drop `Sec-WebSocket-Protocol` on the way up, reproducing the Flask relay's bug.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_websocket_protocol: bool,
    /// Pass the browser's `Cookie` header on to the upstream (off for desktops by default when
    /// an access check is configured: the hub's session cookie stays with the hub).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_cookies: Option<bool>,
    /// Absolute `Location`/`Content-Location` from these URLs (or, `true`, from the server
    /// that answered) rewritten to the public scheme and host (nginx's `proxy_redirect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite_location: Option<RawRewriteLocation>,
    /// `Set-Cookie` `Domain=` from -> to (nginx's `proxy_cookie_domain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<BTreeMap<String, String>>,
    /// `Set-Cookie` `Path=` prefix from -> to (nginx's `proxy_cookie_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_path: Option<BTreeMap<String, String>>,
    /// Overrides of the top-level `websocket:` keys for this route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<RawWebSocket>,
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawRewriteLocation {
    OwnServer(bool),
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawUpstreamRef {
    Name(String),
    Resolve(RawResolver),
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub resolve: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, RawSecretRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<RawBasicAuth>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub redirect: String,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_redirect: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgraded_idle: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_header: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_keepalive: Option<HumanDuration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<HumanDuration>,
}

impl RawTimeouts {
    /// Nothing set: the block is left out when written.
    pub fn is_unset(&self) -> bool {
        let RawTimeouts {
            connect,
            read,
            upgraded_idle,
            client_header,
            upstream_keepalive,
            drain,
        } = self;
        [
            connect,
            read,
            upgraded_idle,
            client_header,
            upstream_keepalive,
            drain,
        ]
        .iter()
        .all(|t| t.is_none())
    }
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// No token at all (configurable-http-proxy without CONFIGPROXY_AUTH_TOKEN).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// HTTPS on the admin listener, optionally with client certificates (mutual TLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawAdminTls>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDynamic {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawUpstreamTls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<RawBasicAuth>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<RawAuth>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub novnc: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepend_path: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_routing: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access: Option<RawAccessLog>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    #[serde(default = "combined")]
    pub format: RawLogFormat,
    #[serde(default = "stdout")]
    pub path: String,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    Combined,
    Json,
}

fn combined() -> RawLogFormat {
    RawLogFormat::Combined
}

fn stdout() -> String {
    "stdout".into()
}

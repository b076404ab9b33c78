//! The YAML surface, exactly as operators write it. Only `config::load` reads these types;
//! the rest of deskgate sees the validated model in `config::model`.

use super::duration::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub admin: Option<RawAdmin>,
    pub dynamic: Option<RawDynamic>,
    pub state_file: Option<PathBuf>,
    pub route_store: Option<RawRouteStore>,
    pub log: Option<RawLog>,
    /// Worker threads: a number, or `auto` (one per core; the default).
    pub threads: Option<RawThreads>,
    /// Workers take ready connections from each other (tokio's multi-thread scheduler, with its
    /// LIFO slot; Pingora's default), or each worker is a runtime of its own.
    pub work_stealing: Option<bool>,
    pub pid_file: Option<PathBuf>,
    /// Largest request header section accepted (bytes); larger gets 431. Default 64 KiB.
    pub max_header_bytes: Option<usize>,
    pub max_header_field_bytes: Option<usize>,
    pub upstream_keepalive_connections: Option<usize>,
    pub proxy_headers: Option<RawProxyHeaders>,
    pub errors: Option<RawErrors>,
    pub metrics: Option<RawMetrics>,
    /// Defaults for every route's `websocket:` block (runtime routes included).
    pub websocket: Option<RawWebSocket>,
}

/// `websocket:` at the top level (defaults) and per route.
#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawWebSocket {
    /// The close code sent to the browser for a desktop lost mid-session, or `none`.
    pub close_on_desktop_loss: Option<RawCloseCode>,
    /// The cap on the desktop -> browser direction of each session (`8MiB/s`, `none`).
    pub max_rate: Option<super::size::RawSize>,
    /// The bucket of that cap (`1MiB`).
    pub burst: Option<super::size::RawSize>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum RawCloseCode {
    Code(i64),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyHeaders {
    pub x_forwarded: Option<RawXForwarded>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Request headers never passed on (Apache's `RequestHeader unset`).
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RawXForwarded {
    Set,
    Append,
    Off,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErrors {
    pub target: Option<String>,
    pub path: Option<PathBuf>,
    pub upstream_status: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub addr: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawThreads {
    Count(usize),
    Word(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteStore {
    pub redis: Option<String>,
    pub sentinel: Option<RawSentinel>,
    pub key_prefix: Option<String>,
}

/// `route_store: { sentinel: … }`: the primary found through Redis Sentinel.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master: String,
    #[serde(default)]
    pub addrs: Vec<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub sentinel_password_env: Option<String>,
    pub sentinel_password_file: Option<PathBuf>,
    pub ack_replicas: Option<usize>,
    pub ack_timeout: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub addr: String,
    #[serde(default)]
    pub redirect_https: bool,
    /// A plain listener that redirects everything to this fixed origin (`https://hub.example`),
    /// path and query appended (Apache's `Redirect / https://hub.example/`).
    pub redirect_to: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub tls: Option<RawListenerTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    #[serde(default)]
    pub certs: Vec<RawCert>,
    pub acme: Option<RawAcme>,
    pub hsts: Option<RawHsts>,
    /// CA certificates (PEM) client certificates must chain to: mutual TLS.
    pub client_ca: Option<PathBuf>,
    /// `required` (the default with `client_ca`) or `optional`.
    pub client_auth: Option<String>,
}

/// `Strict-Transport-Security` on every answer of a TLS listener.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHsts {
    pub max_age: HumanDuration,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: String,
    pub email: Option<String>,
    #[serde(default)]
    pub hosts: Vec<String>,
    pub storage: PathBuf,
    /// http-01 (default) | tls-alpn-01 | dns-01
    pub challenge: Option<String>,
    /// A CA (PEM) to trust for the directory's HTTPS (test CAs such as pebble).
    pub directory_ca: Option<PathBuf>,
    pub renew_after: Option<HumanDuration>,
    pub dns01: Option<RawDns01>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns01 {
    pub rfc2136: RawRfc2136,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    /// `ip:port` of the primary name server.
    pub server: String,
    pub zone: String,
    /// A TSIG key as `tsig-keygen` writes it.
    pub tsig_key_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub servers: Vec<String>,
    pub tls: Option<RawUpstreamTls>,
    pub basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    pub retries: u32,
    /// round_robin (default), least_conn or hash
    pub balance: Option<String>,
    /// For `balance: hash`: client_addr (default), `header:NAME` or `cookie:NAME`
    pub hash_key: Option<String>,
    pub health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Path for an HTTP check (2xx = healthy); without it, a TCP (and TLS) connect check.
    pub http: Option<String>,
    #[serde(default)]
    pub tcp: bool,
    pub interval: Option<HumanDuration>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    #[serde(default = "yes")]
    pub verify: bool,
    pub sni: Option<String>,
    /// A private CA (PEM) to verify the upstream against, instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// A certificate and key (PEM) to present: mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    pub user: String,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

/// A secret header value: `{ env: NAME }` or `{ file: PATH }`, never the value itself.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSecretRef {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    pub upstream: Option<RawUpstreamRef>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub block: Vec<String>,
    #[serde(default)]
    pub novnc: bool,
    pub auth: Option<RawAuth>,
    pub fallback: Option<RawFallback>,
    /// Test-only: drop `Sec-WebSocket-Protocol` on the way up, reproducing the Flask relay's bug.
    #[serde(default)]
    pub drop_websocket_protocol: bool,
    /// Pass the browser's `Cookie` header on to the upstream (off for desktops by default when
    /// an access check is configured: the hub's session cookie stays with the hub).
    pub forward_cookies: Option<bool>,
    /// Absolute `Location`/`Content-Location` from these URLs (or, `true`, from the server
    /// that answered) rewritten to the public scheme and host (nginx's `proxy_redirect`).
    pub rewrite_location: Option<RawRewriteLocation>,
    /// `Set-Cookie` `Domain=` from -> to (nginx's `proxy_cookie_domain`).
    pub cookie_domain: Option<BTreeMap<String, String>>,
    /// `Set-Cookie` `Path=` prefix from -> to (nginx's `proxy_cookie_path`).
    pub cookie_path: Option<BTreeMap<String, String>>,
    /// Overrides of the top-level `websocket:` keys for this route.
    pub websocket: Option<RawWebSocket>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawRewriteLocation {
    OwnServer(bool),
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawUpstreamRef {
    Name(String),
    Resolve(RawResolver),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    pub resolve: String,
    #[serde(default)]
    pub headers: BTreeMap<String, RawSecretRef>,
    pub cache: Option<HumanDuration>,
    pub tls: Option<RawUpstreamTls>,
    pub basic_auth: Option<RawBasicAuth>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub redirect: String,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub url: String,
    #[serde(default)]
    pub forward: Vec<String>,
    #[serde(default)]
    pub copy: Vec<String>,
    pub cache: Option<HumanDuration>,
    pub deny_redirect: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<HumanDuration>,
    pub read: Option<HumanDuration>,
    pub upgraded_idle: Option<HumanDuration>,
    pub client_header: Option<HumanDuration>,
    pub upstream_keepalive: Option<HumanDuration>,
    pub drain: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub addr: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// No token at all (configurable-http-proxy without CONFIGPROXY_AUTH_TOKEN).
    #[serde(default)]
    pub open: bool,
    /// HTTPS on the admin listener, optionally with client certificates (mutual TLS).
    pub tls: Option<RawAdminTls>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAdminTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: Option<String>,
}

#[derive(Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDynamic {
    pub tls: Option<RawUpstreamTls>,
    pub basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    pub block: Vec<String>,
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub novnc: bool,
    #[serde(default)]
    pub strip_prefix: bool,
    pub prepend_path: Option<bool>,
    #[serde(default)]
    pub host_routing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub access: Option<RawAccessLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    #[serde(default = "combined")]
    pub format: RawLogFormat,
    #[serde(default = "stdout")]
    pub path: String,
}

#[derive(Deserialize, Clone, Copy)]
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

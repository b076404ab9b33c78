//! Configuration: YAML surface (`raw`) -> validation -> the typed model below. The model is
//! plain data (addresses, patterns, specs, file names, secrets read from their files); the
//! running objects (upstream pools, access checks, resolvers, certificates, per-route stats)
//! are built from it one layer up, in `runtime`. Every problem is reported as
//! `FILE:LINE:COL: message`, all of them at once where possible, so `deskgate -t` is a useful
//! linter; `Config::error_at` lets the assembly step report its own problems the same way.

pub mod duration;
pub mod raw;
pub mod size;
pub mod span;

pub mod model;

use crate::routing::response_rewrite::ResponseRewrite;
use crate::routing::{HostPattern, PathPattern, RateCap, Route, Template, WebSocketSettings};
use crate::support::secret::{self, Secret};
use crate::upstream::balance::{HealthProbe, HealthSpec, Policy};
use crate::upstream::settings::{
    basic_authorization, with_default_port, Timeouts, TlsFiles, UpstreamTls,
};
use http::HeaderValue;
pub use model::*;
use raw::*;
use span::SpanIndex;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A problem with a config, at the `FILE:LINE:COL` of the YAML it comes from.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// What failed underneath, when more than the text was wrong: the file that could not be
    /// read, the certificate that did not load (its own error, for logs that walk the chain).
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ConfigError {
            file, line, column, ..
        } = self;
        write!(f, "{file}:{line}:{column}: {}", self.message)
    }
}

/// By hand, not derived: the cause is the failed layer's own error (downcast it to its type),
/// not the `Arc` that shares it.
impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ConfigError {
    /// The problem `cause` (a typed error from the layer that failed), with its message.
    pub fn caused_by(
        mut self,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> ConfigError {
        self.cause = Some(Arc::new(cause));
        self
    }
}

/// Two reports of one problem: same place, same words (whatever their causes).
impl PartialEq for ConfigError {
    fn eq(&self, other: &ConfigError) -> bool {
        (&self.file, self.line, self.column, &self.message)
            == (&other.file, other.line, other.column, &other.message)
    }
}

impl Eq for ConfigError {}

/// Every problem of a config that did not load, one `FILE:LINE:COL: message` per line: what a
/// command that loads one (`reload`, `chp`, `demo`) reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The first problem is the source, for logs that walk the chain to a cause.
impl std::error::Error for ConfigErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .first()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Vec<ConfigError>> for ConfigErrors {
    fn from(errors: Vec<ConfigError>) -> ConfigErrors {
        ConfigErrors(errors)
    }
}

/// `host:port` or `[v6]:port`, split (the brackets dropped).
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// `ip:port`, `[v6]:port` or `unix:/path/to.sock`.
pub fn is_listen_addr(addr: &str) -> bool {
    match addr.strip_prefix("unix:") {
        Some(path) => path.starts_with('/') || path.starts_with('.'),
        None => addr.parse::<std::net::SocketAddr>().is_ok(),
    }
}

#[derive(Clone, Copy, Default)]
pub struct LoadOptions {
    /// Check syntax and references but do not read certificates or secrets (`-t --skip-files`).
    pub skip_files: bool,
    /// Do not read secrets at all, not even from the environment (`deskgate import` checks
    /// what it wrote before the operator has set the variables it names).
    pub skip_secrets: bool,
}

pub fn load_file(path: &Path, opts: LoadOptions) -> Result<Config, Vec<ConfigError>> {
    match parse_file(path, opts) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// [`parse_str`] of a file's text.
pub fn parse_file(path: &Path, opts: LoadOptions) -> (Option<Config>, Vec<ConfigError>) {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(&file, &text, opts),
        Err(e) => {
            let error = ConfigError {
                file,
                line: 1,
                column: 1,
                message: format!("cannot read config: {e}"),
                cause: None,
            }
            .caused_by(e);
            (None, vec![error])
        }
    }
}

pub fn load_str(file: &str, text: &str, opts: LoadOptions) -> Result<Config, Vec<ConfigError>> {
    match parse_str(file, text, opts) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(errors),
    }
}

/// The model and every problem found (sorted by position). The model is there whenever the
/// YAML parsed, even with problems, so the assembly step can add its own to the same list.
pub fn parse_str(file: &str, text: &str, opts: LoadOptions) -> (Option<Config>, Vec<ConfigError>) {
    let raw: RawConfig = match serde_yaml::from_str::<Option<RawConfig>>(text) {
        Ok(r) => r.unwrap_or_default(),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let error = ConfigError {
                file: file.to_string(),
                line,
                column,
                message: serde_message(&e),
                cause: None,
            }
            .caused_by(e);
            return (None, vec![error]);
        }
    };
    let mut v = Validator {
        file: file.to_string(),
        spans: SpanIndex::parse(text),
        errors: Vec::new(),
        opts,
    };
    let config = v.config(raw);
    let mut errors = std::mem::take(&mut v.errors);
    let config = Config {
        spans: v.spans,
        ..config
    };
    errors.sort_by_key(|e| (e.line, e.column));
    (Some(config), errors)
}

/// serde_yaml appends " at line L column C"; we print the position first instead.
fn serde_message(e: &serde_yaml::Error) -> String {
    let msg = e.to_string();
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

struct Validator {
    file: String,
    spans: SpanIndex,
    errors: Vec<ConfigError>,
    opts: LoadOptions,
}

impl Validator {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let error = self.located(path, message.into());
        self.errors.push(error);
    }

    /// A typed error from the layer that checked the value, reported at `path` in its own
    /// words and kept as the cause.
    fn failed(&mut self, path: &str, e: impl std::error::Error + Send + Sync + 'static) {
        let error = self.located(path, e.to_string()).caused_by(e);
        self.errors.push(error);
    }

    fn located(&self, path: &str, message: String) -> ConfigError {
        let pos = self.spans.find(path);
        ConfigError {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            message,
            cause: None,
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let listeners = raw
            .listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| self.listener(i, l))
            .collect::<Vec<_>>();
        let plain_listener = listeners.iter().any(|l| l.tls.is_none());
        for (i, l) in listeners.iter().enumerate() {
            let http01 = l
                .acme
                .as_ref()
                .is_some_and(|a| a.challenge == ChallengeKind::Http01);
            if http01 && !plain_listener {
                self.error(
                    &format!("listeners[{i}].tls.acme"),
                    "http-01 is answered on a plain-HTTP listener (port 80); add one, or use `challenge: tls-alpn-01`",
                );
            }
        }
        if listeners.is_empty() {
            self.error("", "no `listeners:`; add at least one, for example `- addr: \"0.0.0.0:443\"` with `tls:`");
        }
        let mut upstreams = HashMap::new();
        for (name, u) in raw.upstreams {
            if let Some(up) = self.upstream(&name, u) {
                upstreams.insert(name, up);
            }
        }
        let t = raw.timeouts;
        let d = Timeouts::default();
        let timeouts = Timeouts {
            connect: t.connect.map_or(d.connect, |x| x.0),
            read: t.read.map_or(d.read, |x| x.0),
            upgraded_idle: t.upgraded_idle.map_or(d.upgraded_idle, |x| x.0),
            client_header: t.client_header.map_or(d.client_header, |x| x.0),
            upstream_keepalive: t.upstream_keepalive.map_or(d.upstream_keepalive, |x| x.0),
            drain: t.drain.map_or(d.drain, |x| x.0),
        };
        let websocket = self.websocket(
            "websocket",
            raw.websocket.as_ref(),
            WebSocketSettings::default(),
        );
        let mut seen = HashSet::new();
        let mut routes = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            if let Some(route) = self.route(i, r, &upstreams, websocket) {
                if !seen.insert(route.label.clone()) {
                    self.error(
                        &format!("routes[{i}]"),
                        format!(
                            "duplicate route `{}`: an earlier route has the same host and path",
                            route.label
                        ),
                    );
                }
                routes.push(route);
            }
        }
        let admin = raw.admin.map(|a| self.admin(a));
        let dynamic = DynamicSpec {
            websocket,
            ..raw.dynamic.map(|d| self.dynamic(d)).unwrap_or_default()
        };
        // One worker per core unless told otherwise: Pingora's default of 1 leaves cores idle.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match raw.threads {
            None => cores,
            Some(RawThreads::Word(w)) if w == "auto" => cores,
            Some(RawThreads::Count(n)) if n > 0 => n,
            Some(other) => {
                let found = match other {
                    RawThreads::Count(n) => n.to_string(),
                    RawThreads::Word(w) => w,
                };
                self.error(
                    "threads",
                    format!("expected a number of worker threads (at least 1) or `auto`, found `{found}`"),
                );
                1
            }
        };
        Config {
            file: self.file.clone(),
            listeners,
            upstreams,
            routes,
            timeouts,
            admin,
            dynamic,
            state_file: raw.state_file,
            route_store: raw.route_store.and_then(|r| self.route_store(r)),
            threads: threads.max(1),
            work_stealing: raw.work_stealing.unwrap_or(true),
            pid_file: raw.pid_file,
            access_log: raw.log.as_ref().and_then(|l| l.access.as_ref()).map(|a| {
                let format = match a.format {
                    RawLogFormat::Combined => AccessLogFormat::Combined,
                    RawLogFormat::Json => AccessLogFormat::Json,
                };
                (format, a.path.clone())
            }),
            log_level: raw.log.and_then(|l| l.level),
            max_header_bytes: raw.max_header_bytes.unwrap_or(64 * 1024),
            // Apache's LimitRequestFieldSize (nginx's header buffers are 8 KiB too): a field
            // one of them would refuse is refused here as well, not passed to a desktop.
            max_header_field_bytes: raw.max_header_field_bytes.unwrap_or(8190),
            // Pingora keeps 128: past that many kept-alive clients busy at once, the surplus
            // upstream connections were closed after each answer and opened (with a TLS
            // handshake) for the next request. The pool never holds more than the peak of
            // concurrent upstream requests, so a high cap costs nothing until it is used.
            upstream_keepalive_connections: raw.upstream_keepalive_connections.unwrap_or(8192),
            proxy_headers: raw
                .proxy_headers
                .map(|h| self.proxy_headers(h))
                .unwrap_or_default(),
            error_pages: raw.errors.map(|e| self.errors(e)).unwrap_or_default(),
            metrics_addr: raw.metrics.map(|m| {
                if !is_listen_addr(&m.addr) {
                    self.error(
                        "metrics.addr",
                        format!(
                            "expected `ip:port` such as `127.0.0.1:8002`, found `{}`",
                            m.addr
                        ),
                    );
                }
                m.addr
            }),
            websocket,
            spans: SpanIndex::default(),
        }
    }

    /// A `websocket:` block at `at`: its keys over `base` (the defaults, or the top level's).
    fn websocket(
        &mut self,
        at: &str,
        raw: Option<&RawWebSocket>,
        base: WebSocketSettings,
    ) -> WebSocketSettings {
        let Some(raw) = raw else { return base };
        let close_on_desktop_loss = match &raw.close_on_desktop_loss {
            None => base.close_on_desktop_loss,
            Some(RawCloseCode::Word(w)) if w == "none" => None,
            Some(RawCloseCode::Code(c)) if is_server_close_code(*c) => Some(*c as u16),
            Some(other) => {
                let found = match other {
                    RawCloseCode::Code(c) => c.to_string(),
                    RawCloseCode::Word(w) => w.clone(),
                };
                self.error(
                    &format!("{at}.close_on_desktop_loss"),
                    format!("expected a close code a server may send (1011, the default; 1000-1003, 1007-1009, 1011-1013, 3000-4999) or `none`, found `{found}`"),
                );
                base.close_on_desktop_loss
            }
        };
        WebSocketSettings {
            close_on_desktop_loss,
            max_rate: self.rate_cap(at, raw, base.max_rate),
        }
    }

    /// `max_rate` and `burst` of a `websocket:` block over `base`. A `max_rate` without `burst`
    /// gets the default burst for its rate; a `burst` alone changes the inherited cap's.
    fn rate_cap(&mut self, at: &str, raw: &RawWebSocket, base: Option<RateCap>) -> Option<RateCap> {
        let rate = match &raw.max_rate {
            None => base.map(|c| c.bytes_per_sec),
            Some(r) => match size::parse_rate(r) {
                Ok(Some(0)) => {
                    self.error(
                        &format!("{at}.max_rate"),
                        "expected a rate above 0 (or `none` for no cap), found `0`".to_string(),
                    );
                    return base;
                }
                Ok(rate) => rate,
                Err(e) => {
                    self.failed(&format!("{at}.max_rate"), e);
                    return base;
                }
            },
        };
        let burst = match &raw.burst {
            None if raw.max_rate.is_some() => rate.map(RateCap::default_burst),
            None => base.map(|c| c.burst),
            Some(b) => match size::parse_size(b) {
                Ok(0) => {
                    self.error(
                        &format!("{at}.burst"),
                        "expected a size above 0, found `0`".to_string(),
                    );
                    return base;
                }
                Ok(b) if rate.is_none() => {
                    self.error(
                        &format!("{at}.burst"),
                        format!("a burst ({b} bytes) needs a `max_rate` to go with"),
                    );
                    return base;
                }
                Ok(b) => Some(b),
                Err(e) => {
                    self.failed(&format!("{at}.burst"), e);
                    return base;
                }
            },
        };
        Some(RateCap {
            bytes_per_sec: rate?,
            burst: burst?,
        })
    }

    fn proxy_headers(&mut self, h: RawProxyHeaders) -> ProxyHeaders {
        let mut add = Vec::new();
        for (name, value) in h.add {
            let at = format!("proxy_headers.add.{name}");
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                (Ok(n), Ok(v)) => add.push((n, v)),
                (Err(_), _) => self.error(&at, format!("`{name}` is not a valid header name")),
                (_, Err(_)) => self.error(&at, "not a valid header value (control characters?)"),
            }
        }
        let mut remove = Vec::new();
        for (i, name) in h.remove.iter().enumerate() {
            match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => remove.push(n),
                Err(_) => self.error(
                    &format!("proxy_headers.remove[{i}]"),
                    format!("`{name}` is not a valid header name"),
                ),
            }
        }
        ProxyHeaders {
            remove,
            x_forwarded: match h.x_forwarded {
                None | Some(RawXForwarded::Set) => XForwarded::Set,
                Some(RawXForwarded::Append) => XForwarded::Append,
                Some(RawXForwarded::Off) => XForwarded::Off,
            },
            add,
        }
    }

    fn errors(&mut self, e: RawErrors) -> ErrorPagesSpec {
        if e.target.is_some() && e.path.is_some() {
            self.error("errors", "give `target:` or `path:`, not both");
        }
        if let Some(t) = &e.target {
            if let Err(e) = crate::upstream::client::parse_url(t) {
                self.failed("errors.target", e);
            }
        }
        if let Some(code) = e.upstream_status {
            if !(400..=599).contains(&code) {
                self.error(
                    "errors.upstream_status",
                    format!("expected an error status 400-599, found {code}"),
                );
            }
        }
        ErrorPagesSpec {
            target: e.target,
            dir: e.path,
            upstream_status: e.upstream_status,
        }
    }

    fn listener(&mut self, i: usize, l: RawListener) -> Listener {
        let at = format!("listeners[{i}]");
        if !is_listen_addr(&l.addr) {
            self.error(
                &format!("{at}.addr"),
                format!(
                    "expected `ip:port` such as `0.0.0.0:443` or `unix:/run/deskgate.sock`, found `{}`",
                    l.addr
                ),
            );
        }
        let mut acme = None;
        let mut hsts = None;
        let mut client_auth = None;
        let tls = l.tls.map(|t| {
            if let Some(h) = &t.hsts {
                hsts = self.hsts(&format!("{at}.tls.hsts"), h);
            }
            client_auth = self.client_auth(
                &format!("{at}.tls"),
                t.client_ca.as_ref(),
                t.client_auth.as_deref(),
            );
            if t.certs.is_empty() && t.acme.is_none() {
                self.error(
                    &format!("{at}.tls"),
                    "a TLS listener needs at least one certificate under `certs:`, or `acme:`",
                );
            }
            if let Some(a) = t.acme {
                acme = self.acme(&format!("{at}.tls.acme"), a);
            }
            t.certs
                .into_iter()
                .enumerate()
                .map(|(j, c)| self.certificate(&format!("{at}.tls.certs[{j}]"), c))
                .collect()
        });
        if l.addr.starts_with("unix:") && tls.is_some() {
            self.error(
                &format!("{at}.tls"),
                "TLS is offered on `ip:port` listeners; a `unix:` socket listener is plain HTTP",
            );
        }
        let redirect_to = l.redirect_to.as_ref().and_then(|to| {
            let at = format!("{at}.redirect_to");
            if tls.is_some() || l.redirect_https {
                self.error(&at, "`redirect_to` belongs on a plain-HTTP listener without `tls:` or `redirect_https`");
            }
            match redirect_origin(to) {
                Ok(o) => Some(o),
                Err(e) => {
                    self.failed(&at, e);
                    None
                }
            }
        });
        if l.redirect_https && tls.is_some() {
            self.error(
                &format!("{at}.redirect_https"),
                "`redirect_https` belongs on a plain-HTTP listener, this one has `tls:`",
            );
        }
        Listener {
            addr: l.addr,
            redirect_https: l.redirect_https,
            redirect_to,
            max_connections: l.max_connections,
            max_connections_per_client: l.max_connections_per_client,
            tls,
            acme,
            hsts,
            client_auth,
        }
    }

    fn client_auth(
        &mut self,
        at: &str,
        ca: Option<&PathBuf>,
        mode: Option<&str>,
    ) -> Option<ClientAuthSpec> {
        let required = match mode {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.error(
                    &format!("{at}.client_auth"),
                    format!("expected `required` or `optional`, found `{other}`"),
                );
                true
            }
        };
        match ca {
            Some(ca) => Some(ClientAuthSpec {
                at: format!("{at}.client_ca"),
                ca: ca.clone(),
                required,
            }),
            None if mode.is_some() => {
                self.error(
                    &format!("{at}.client_auth"),
                    "`client_auth:` needs `client_ca:` (the CA client certificates must chain to)",
                );
                None
            }
            None => None,
        }
    }

    /// Browsers' preload list takes only `max-age` of a year or more with subdomains.
    fn hsts(&mut self, at: &str, h: &RawHsts) -> Option<String> {
        let secs = h.max_age.0.as_secs();
        if h.preload && !(h.include_subdomains && secs >= 365 * 86400) {
            self.error(
                &format!("{at}.preload"),
                "`preload: true` needs `include_subdomains: true` and `max_age` of at least 365d (the browsers' preload list requires both)",
            );
            return None;
        }
        let mut value = format!("max-age={secs}");
        if h.include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if h.preload {
            value.push_str("; preload");
        }
        Some(value)
    }

    fn acme(&mut self, at: &str, a: RawAcme) -> Option<AcmeSpec> {
        let errors_before = self.errors.len();
        if let Err(e) = crate::upstream::client::parse_url(&a.directory) {
            self.failed(&format!("{at}.directory"), e);
        }
        let challenge = match a.challenge.as_deref() {
            None => ChallengeKind::Http01,
            Some(c) => ChallengeKind::parse(c).unwrap_or_else(|| {
                self.error(
                    &format!("{at}.challenge"),
                    format!("expected http-01, tls-alpn-01 or dns-01, found `{c}`"),
                );
                ChallengeKind::Http01
            }),
        };
        if a.hosts.is_empty() {
            self.error(
                &format!("{at}.hosts"),
                "name the hosts to obtain a certificate for",
            );
        }
        for (k, h) in a.hosts.iter().enumerate() {
            let bad = HostPattern::parse(h)
                .err()
                .map(|e| e.to_string())
                .or_else(|| {
                    (h.contains('{')).then(|| format!("`{h}`: a certificate names real hosts"))
                });
            if let Some(e) = bad {
                self.error(&format!("{at}.hosts[{k}]"), e);
            } else if h.starts_with("*.") && challenge != ChallengeKind::Dns01 {
                self.error(
                    &format!("{at}.hosts[{k}]"),
                    format!(
                        "`{h}` is a wildcard: CAs issue those only through `challenge: dns-01`"
                    ),
                );
            }
        }
        let dns01 = match (&a.dns01, challenge) {
            (Some(d), _) => {
                let r = &d.rfc2136;
                if r.server.parse::<std::net::SocketAddr>().is_err() {
                    self.error(
                        &format!("{at}.dns01.rfc2136.server"),
                        format!(
                            "expected the name server as `ip:port`, found `{}`",
                            r.server
                        ),
                    );
                }
                // The key itself is read where it is used (runtime), like certificates.
                Some(Rfc2136Spec {
                    server: r.server.clone(),
                    zone: r.zone.trim_end_matches('.').to_ascii_lowercase(),
                    tsig_key_file: r.tsig_key_file.clone(),
                })
            }
            (None, ChallengeKind::Dns01) => {
                self.error(
                    at,
                    "`challenge: dns-01` needs `dns01: { rfc2136: { server, zone, tsig_key_file } }`",
                );
                None
            }
            (None, _) => None,
        };
        if let Some(ca) = &a.directory_ca {
            if !self.opts.skip_files && !ca.is_file() {
                self.error(
                    &format!("{at}.directory_ca"),
                    format!("cannot read {}", ca.display()),
                );
            }
        }
        if self.errors.len() > errors_before {
            return None;
        }
        Some(AcmeSpec {
            at: at.to_string(),
            directory: a.directory,
            contact: a.email.into_iter().map(|e| format!("mailto:{e}")).collect(),
            hosts: a.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            storage: a.storage,
            challenge,
            directory_ca: a.directory_ca,
            renew_after: a.renew_after.map(|d| d.0),
            dns01,
        })
    }

    fn certificate(&mut self, at: &str, c: RawCert) -> CertificateSpec {
        for (k, h) in c.hosts.iter().enumerate() {
            if let Err(e) = HostPattern::parse(h) {
                self.failed(&format!("{at}.hosts[{k}]"), e);
            }
        }
        CertificateSpec {
            at: at.to_string(),
            cert: c.cert,
            key: c.key,
            hosts: c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    fn secret(
        &mut self,
        at: &str,
        file: Option<&Path>,
        env: Option<&str>,
        what: &str,
    ) -> Option<Secret> {
        if self.opts.skip_secrets || (self.opts.skip_files && file.is_some() && env.is_none()) {
            return Some(Secret::placeholder());
        }
        match secret::load(file, env, what) {
            Ok(s) => Some(s),
            Err(e) => {
                self.failed(at, e);
                None
            }
        }
    }

    fn basic_auth(&mut self, at: &str, b: &RawBasicAuth) -> Option<HeaderValue> {
        let password = self.secret(
            &format!("{at}.basic_auth"),
            b.password_file.as_deref(),
            b.password_env.as_deref(),
            "basic_auth password",
        )?;
        Some(basic_authorization(&b.user, password.expose()))
    }

    /// The files are read where they are used (`runtime`), like listener certificates.
    fn upstream_tls(&mut self, at: &str, t: &RawUpstreamTls) -> UpstreamTls {
        if t.client_cert.is_some() != t.client_key.is_some() {
            self.error(
                at,
                "give both `client_cert` and `client_key` (mutual TLS), or neither",
            );
        }
        let files = (t.ca.is_some() || t.client_cert.is_some()).then(|| {
            Arc::new(TlsFiles {
                ca: t.ca.clone(),
                client_cert: t.client_cert.clone(),
                client_key: t.client_key.clone(),
            })
        });
        UpstreamTls {
            verify: t.verify,
            sni: t.sni.clone().unwrap_or_default(),
            files,
            identity: None,
        }
    }

    fn upstream(&mut self, name: &str, u: RawUpstream) -> Option<UpstreamSpec> {
        let at = format!("upstreams.{name}");
        if u.servers.is_empty() {
            self.error(
                &format!("{at}.servers"),
                "an upstream needs at least one server (`host:port`)",
            );
        }
        let default_port = if u.tls.is_some() { 443 } else { 80 };
        let mut servers = Vec::new();
        for (i, s) in u.servers.iter().enumerate() {
            match with_default_port(s, default_port) {
                Ok(s) => servers.push(s),
                Err(e) => self.failed(&format!("{at}.servers[{i}]"), e),
            }
        }
        let tls = u.tls.as_ref().map(|t| {
            let mut tls = self.upstream_tls(&format!("{at}.tls"), t);
            if tls.sni.is_empty() {
                tls.sni = servers
                    .first()
                    .map(|s| crate::upstream::settings::host_of(s).to_string())
                    .unwrap_or_default();
            }
            tls
        });
        let authorization = match &u.basic_auth {
            Some(b) => Some(self.basic_auth(&at, b)?),
            None => None,
        };
        let balanced = servers.len() > 1 || u.health.is_some() || u.balance.is_some();
        let pool = if balanced {
            let policy = match Policy::parse(u.balance.as_deref(), u.hash_key.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    self.failed(&format!("{at}.balance"), e);
                    return None;
                }
            };
            let health = u.health.as_ref().map(|h| HealthSpec {
                probe: match &h.http {
                    Some(path) => HealthProbe::Http { path: path.clone() },
                    None => HealthProbe::Tcp,
                },
                interval: h.interval.map_or(Duration::from_secs(5), |d| d.0),
            });
            Some(PoolSpec { policy, health })
        } else {
            None
        };
        Some(UpstreamSpec {
            at,
            servers,
            tls,
            authorization,
            retries: u.retries,
            pool,
        })
    }

    fn route(
        &mut self,
        i: usize,
        r: RawRoute,
        upstreams: &HashMap<String, UpstreamSpec>,
        websocket: WebSocketSettings,
    ) -> Option<RouteSpec> {
        let at = format!("routes[{i}]");
        let host = match r.host.as_deref().map(HostPattern::parse) {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                self.failed(&format!("{at}.host"), e);
                return None;
            }
            None => None,
        };
        let path = match r.path.as_deref().map(PathPattern::parse) {
            Some(Ok(p)) => p,
            Some(Err(e)) => {
                self.failed(&format!("{at}.path"), e);
                return None;
            }
            None if host.is_some() => PathPattern::root(),
            None => {
                self.error(&at, "a route needs `host:`, `path:` or both");
                return None;
            }
        };
        let mut captures: Vec<String> = path.capture_names();
        if let Some(HostPattern::Captures(t)) = &host {
            captures.extend(t.capture_names().map(str::to_string));
        }
        let response_rewrite = self.response_rewrite(&at, &r);
        let Some(upstream_raw) = r.upstream else {
            self.error(&at, "a route needs `upstream:` (a name, a `desktop-{name}` template, or `{ resolve: URL }`)");
            return None;
        };
        let upstream = match upstream_raw {
            RawUpstreamRef::Name(name) => {
                let t = match Template::parse(&name) {
                    Ok(t) => t,
                    Err(e) => {
                        self.failed(&format!("{at}.upstream"), e);
                        return None;
                    }
                };
                if t.has_captures() {
                    if let Some(missing) = t.uncaptured(&captures) {
                        self.error(&format!("{at}.upstream"), format!("`{{{missing}}}` in upstream `{name}` is not captured by this route's host or path"));
                        return None;
                    }
                    UpstreamChoice::Template(t)
                } else {
                    match upstreams.get(&name) {
                        Some(_) => UpstreamChoice::Named(name),
                        None => {
                            let mut known: Vec<&str> =
                                upstreams.keys().map(String::as_str).collect();
                            known.sort();
                            self.error(&format!("{at}.upstream"), format!("route names upstream `{name}`, which is not defined under `upstreams:` (defined: {})", known.join(", ")));
                            return None;
                        }
                    }
                }
            }
            RawUpstreamRef::Resolve(res) => {
                let authorization = match &res.basic_auth {
                    Some(b) => Some(self.basic_auth(&format!("{at}.upstream"), b)?),
                    None => None,
                };
                let mut headers = Vec::new();
                for (name, s) in &res.headers {
                    let secret = self.secret(
                        &format!("{at}.upstream.headers.{name}"),
                        s.file.as_deref(),
                        s.env.as_deref(),
                        &format!("header {name}"),
                    )?;
                    headers.push((name.clone(), secret));
                }
                UpstreamChoice::Resolve(ResolverSpec {
                    url: res.resolve,
                    cache: res.cache.map_or(Duration::from_secs(10), |d| d.0),
                    headers,
                    tls: res
                        .tls
                        .as_ref()
                        .map(|t| self.upstream_tls(&format!("{at}.upstream.tls"), t)),
                    authorization,
                })
            }
        };
        for (k, b) in r.block.iter().enumerate() {
            if !b.starts_with('/') {
                self.error(
                    &format!("{at}.block[{k}]"),
                    format!("a blocked path starts with `/`, found `{b}`"),
                );
            }
        }
        let access = r.auth.as_ref().map(access_spec);
        if r.novnc && path.capture_names().is_empty() && path.as_str() == "/" {
            self.error(
                &format!("{at}.novnc"),
                "`novnc: true` needs a path prefix such as `/desktop/{name}/`",
            );
        }
        let forward_cookies = r.forward_cookies.unwrap_or(access.is_none());
        let label = Route::label_for(host.as_ref(), &path);
        let websocket = self.websocket(&format!("{at}.websocket"), r.websocket.as_ref(), websocket);
        Some(RouteSpec {
            at,
            label,
            host,
            path,
            captures,
            upstream,
            strip_prefix: r.strip_prefix,
            block: r.block,
            novnc: r.novnc,
            access,
            fallback_redirect: r.fallback.map(|f| f.redirect),
            drop_websocket_protocol: r.drop_websocket_protocol,
            forward_cookies,
            response_rewrite,
            websocket,
        })
    }

    /// `rewrite_location`, `cookie_domain`, `cookie_path`: None when the route sets none, so
    /// answers on other routes are not looked at.
    fn response_rewrite(&mut self, at: &str, r: &RawRoute) -> Option<Arc<ResponseRewrite>> {
        let mut rw = ResponseRewrite::default();
        let urls: Vec<&String> = match &r.rewrite_location {
            None | Some(RawRewriteLocation::OwnServer(false)) => Vec::new(),
            Some(RawRewriteLocation::OwnServer(true)) => {
                rw.own_server = true;
                Vec::new()
            }
            Some(RawRewriteLocation::One(u)) => vec![u],
            Some(RawRewriteLocation::Many(us)) => us.iter().collect(),
        };
        for u in urls {
            match location_prefix(u) {
                Ok(p) => rw.locations.push(p),
                Err(e) => self.failed(&format!("{at}.rewrite_location"), e),
            }
        }
        for (key, map, list) in [
            ("cookie_domain", &r.cookie_domain, &mut rw.cookie_domain),
            ("cookie_path", &r.cookie_path, &mut rw.cookie_path),
        ] {
            for (from, to) in map.iter().flatten() {
                let path = key == "cookie_path";
                let bad = |v: &str| {
                    v.is_empty()
                        || v.contains([';', ',', ' ', '\t', '=', '"'])
                        || (path && !v.starts_with('/'))
                };
                if bad(from) || bad(to) {
                    let what = if path {
                        "paths starting with `/`"
                    } else {
                        "domain names"
                    };
                    self.error(
                        &format!("{at}.{key}"),
                        format!("expected {what} (from: to), found `{from}: {to}`"),
                    );
                } else {
                    list.push((from.clone(), to.clone()));
                }
            }
        }
        (rw != ResponseRewrite::default()).then(|| Arc::new(rw))
    }

    fn admin(&mut self, a: RawAdmin) -> AdminSettings {
        if !is_listen_addr(&a.addr) {
            self.error(
                "admin.addr",
                format!(
                    "expected `ip:port` such as `127.0.0.1:8001` or `unix:/run/deskgate-api.sock`, found `{}`",
                    a.addr
                ),
            );
        }
        let token = if a.open {
            if a.token_env.is_some() || a.token_file.is_some() {
                self.error(
                    "admin.open",
                    "`open: true` means no token; drop `token_env:`/`token_file:` or `open:`",
                );
            }
            None
        } else if a.token_env.is_none() && a.token_file.is_none() {
            self.error("admin", "the admin API needs `token_env:` or `token_file:` (configurable-http-proxy's CONFIGPROXY_AUTH_TOKEN), or `open: true`");
            None
        } else {
            self.secret(
                "admin",
                a.token_file.as_deref(),
                a.token_env.as_deref(),
                "admin token",
            )
        };
        let tls = a.tls.as_ref().map(|t| CertificateSpec {
            at: "admin.tls".into(),
            cert: t.cert.clone(),
            key: t.key.clone(),
            hosts: Vec::new(),
        });
        let client_auth = a.tls.as_ref().and_then(|t| {
            self.client_auth("admin.tls", t.client_ca.as_ref(), t.client_auth.as_deref())
        });
        if tls.is_some() && a.addr.starts_with("unix:") {
            self.error(
                "admin.tls",
                "TLS is offered on `ip:port` admin listeners, not `unix:` sockets",
            );
        }
        AdminSettings {
            addr: a.addr,
            token,
            tls,
            client_auth,
        }
    }

    fn route_store(&mut self, r: RawRouteStore) -> Option<RouteStoreSpec> {
        let key_prefix = r.key_prefix.unwrap_or_else(|| "deskgate:".into());
        let backend = match (r.redis, r.sentinel) {
            (Some(url), None) => StoreBackend::Redis { url },
            (None, Some(s)) => StoreBackend::Sentinel(self.sentinel(s)?),
            (Some(_), Some(_)) => {
                self.error(
                    "route_store.sentinel",
                    "give `redis:` (one server) or `sentinel:` (a primary found by Redis Sentinel), not both",
                );
                return None;
            }
            (None, None) => {
                self.error(
                    "route_store",
                    "expected `redis: redis://HOST:PORT/DB` or `sentinel: { master: NAME, addrs: [HOST:PORT, ...] }`",
                );
                return None;
            }
        };
        Some(RouteStoreSpec {
            key_prefix,
            backend,
        })
    }

    fn sentinel(&mut self, s: RawSentinel) -> Option<SentinelSpec> {
        let at = "route_store.sentinel";
        let mut ok = true;
        if s.master.trim().is_empty() {
            self.error(
                &format!("{at}.master"),
                "expected the name the sentinels monitor (`sentinel monitor NAME ...`), found an empty string",
            );
            ok = false;
        }
        if s.addrs.is_empty() {
            self.error(
                &format!("{at}.addrs"),
                "expected at least one sentinel as `host:port` (26379 is Sentinel's port)",
            );
            ok = false;
        }
        let mut addrs = Vec::new();
        for (i, a) in s.addrs.iter().enumerate() {
            match split_host_port(a) {
                Some(hp) => addrs.push(hp),
                None => {
                    self.error(
                        &format!("{at}.addrs[{i}]"),
                        format!("expected a sentinel as `host:port` such as `10.0.0.5:26379`, found `{a}`"),
                    );
                    ok = false;
                }
            }
        }
        let password = (s.password_env.is_some() || s.password_file.is_some())
            .then(|| {
                self.secret(
                    at,
                    s.password_file.as_deref(),
                    s.password_env.as_deref(),
                    "Redis password",
                )
            })
            .flatten();
        let sentinel_password = (s.sentinel_password_env.is_some()
            || s.sentinel_password_file.is_some())
        .then(|| {
            self.secret(
                at,
                s.sentinel_password_file.as_deref(),
                s.sentinel_password_env.as_deref(),
                "sentinel password",
            )
        })
        .flatten();
        ok.then(|| SentinelSpec {
            master: s.master,
            addrs,
            password,
            sentinel_password,
            ack_replicas: s.ack_replicas.unwrap_or(1),
            ack_timeout: s.ack_timeout.map(|d| d.0).unwrap_or(Duration::from_secs(1)),
        })
    }

    fn dynamic(&mut self, d: RawDynamic) -> DynamicSpec {
        let authorization = d
            .basic_auth
            .as_ref()
            .and_then(|b| self.basic_auth("dynamic", b));
        DynamicSpec {
            tls: d.tls.as_ref().map(|t| self.upstream_tls("dynamic.tls", t)),
            authorization,
            block: d.block,
            access: d.auth.as_ref().map(access_spec),
            novnc: d.novnc,
            strip_prefix: d.strip_prefix,
            prepend_path: d.prepend_path.unwrap_or(true),
            host_routing: d.host_routing,
            websocket: WebSocketSettings::default(),
        }
    }
}

/// Checked where it is built (`runtime`): its URL's placeholders depend on the route.
/// Close codes RFC 6455 (7.4.1, 7.4.2) lets a server send: not 1004-1006 and 1015 (reserved,
/// never on the wire), 1010 (a client's), 1014 (rejected as reserved by clients such as
/// tungstenite), 2000-2999 (for extensions); 3000-4999 belong to libraries and applications.
fn is_server_close_code(code: i64) -> bool {
    matches!(code, 1000..=1003 | 1007..=1009 | 1011..=1013 | 3000..=4999)
}

fn access_spec(a: &RawAuth) -> AccessSpec {
    AccessSpec {
        url: a.url.clone(),
        forward: a.forward.clone(),
        copy: a.copy.clone(),
        cache: a.cache.map_or(Duration::ZERO, |d| d.0),
        deny_redirect: a.deny_redirect.clone(),
    }
}

#[cfg(test)]
mod tests;

/// Why a `rewrite_location` URL or a `redirect_to` origin is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("expected an http:// or https:// URL such as `http://127.0.0.1:3000/`, found `{url}`")]
    NotHttpUrl { url: String },
    #[error("expected an origin such as `https://hub.example.org`, found `{url}`")]
    NotOrigin { url: String },
}

/// A `rewrite_location` URL as the prefix it is compared with: lower-case scheme and host,
/// ending in `/`.
fn location_prefix(url: &str) -> Result<String, LocationError> {
    let bad = || LocationError::NotHttpUrl {
        url: url.to_string(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") {
        return Err(bad());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) || path.contains(['?', '#'])
    {
        return Err(bad());
    }
    let path = if path.ends_with('/') {
        path.to_string()
    } else {
        format!("{path}/")
    };
    Ok(format!(
        "{scheme}://{}{path}",
        authority.to_ascii_lowercase()
    ))
}

/// A `redirect_to` origin (`https://hub.example.org[:port][/base]`), without a trailing `/`.
fn redirect_origin(url: &str) -> Result<String, LocationError> {
    let prefix = location_prefix(url).map_err(|_| LocationError::NotOrigin {
        url: url.to_string(),
    })?;
    Ok(prefix.trim_end_matches('/').to_string())
}

//! `deskgate import apache`: Apache 2.4 vhosts (as a hub runs them) become deskgate YAML.
//!
//! Each generated block carries a comment naming the Apache `FILE:LINE` it came from; every
//! directive not translated gets a comment saying why. Directives that change routing or
//! security and could not be translated are `skipped` (the command exits non-zero unless
//! `--allow-partial`); those with no routing effect (logging, modules, process settings) are
//! listed once. `deploy/apache-migration.md` is the hand-written reference for the mapping.

use super::apache_conf::{
    is_secret_header, parse_files, userinfo, Directive, Node, Origin, ParseError, Section,
};
use super::yaml_out::{self, Anchor};
use crate::config::duration::HumanDuration;
use crate::config::raw::{
    RawBasicAuth, RawCert, RawConfig, RawFallback, RawListener, RawListenerTls, RawProxyHeaders,
    RawResolver, RawRewriteLocation, RawRoute, RawSecretRef, RawTimeouts, RawUpstream,
    RawUpstreamRef, RawUpstreamTls,
};
use base64::Engine;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct ImportOptions {
    /// The hub URL a `RewriteMap prg:` lookup becomes (`.../container-target/{name}`).
    pub resolver_url: Option<String>,
    /// Headers for that URL: `NAME: env:VAR` or `NAME: file:/path`.
    pub resolver_headers: Vec<String>,
    /// Where secrets found in the Apache files are written; None: environment variables are
    /// named instead, and the operator sets them.
    pub secrets_dir: Option<PathBuf>,
}

pub struct Conversion {
    pub yaml: String,
    /// `FILE:LINE: directive: why` for what changes routing or security and was not translated.
    pub skipped: Vec<String>,
    /// Directive names with no routing effect that were not translated, with where they are.
    pub ignored: Vec<String>,
    /// Secret files to write (mode 0600) before the config is used.
    pub secret_files: Vec<(PathBuf, String)>,
    /// What the operator must do (set an environment variable...).
    pub notices: Vec<String>,
    /// Where deskgate will answer differently from Apache, on purpose.
    pub notes: Vec<String>,
}

/// How a `--resolver-header` must be given; the value itself is never echoed.
const HEADER_FORMS: &str = "give it as 'NAME: env:VARIABLE' or 'NAME: file:/path/to/secret' (the value itself never goes on the command line or into the YAML)";

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The Apache files do not parse (the error names `FILE:LINE`).
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("deskgate import: --resolver-header {name}...: no `NAME:`; {HEADER_FORMS}")]
    HeaderWithoutName { name: String },
    #[error("deskgate import: --resolver-header: `{name}` is not a header name; {HEADER_FORMS}")]
    HeaderName { name: String },
    #[error("deskgate import: --resolver-header {name}: the value is neither env:VARIABLE nor file:PATH (env: and file: in lower case); {HEADER_FORMS}")]
    HeaderSource { name: String },
    #[error("deskgate import: --resolver-url: a user:password in the URL; give credentials with --resolver-header 'NAME: env:VARIABLE'")]
    ResolverUrlCredentials,
    #[error("deskgate import: --resolver-url {url}: {why}")]
    ResolverUrl { url: String, why: String },
    #[error("deskgate import: no vhost could be translated, nothing to listen on (nothing written): {}", skipped.join("; "))]
    NothingToListenOn { skipped: Vec<String> },
    /// Not expected: the config holds strings, numbers and paths only.
    #[error("deskgate import: the YAML cannot be written (an importer bug): {0}")]
    Yaml(#[from] serde_yaml::Error),
}

const SHADOWED_BY_REWRITE: &str = "ProxyPass on hosts a RewriteRule [P] lookup takes whole (mod_rewrite runs first in Apache; these never answered there)";

/// Directives with no effect on routing or security: listed once, not fatal.
const NO_ROUTING_EFFECT: &[&str] = &[
    "ServerAdmin",
    "ErrorLog",
    "CustomLog",
    "TransferLog",
    "LogLevel",
    "LogFormat",
    "LoadModule",
    "LoadFile",
    "ServerSignature",
    "ServerTokens",
    "DocumentRoot",
    "DirectoryIndex",
    "Options",
    "AllowOverride",
    "KeepAlive",
    "MaxKeepAliveRequests",
    "KeepAliveTimeout",
    "User",
    "Group",
    "PidFile",
    "Listen",
    "ServerRoot",
    "Mutex",
    "HostnameLookups",
    "AddDefaultCharset",
    "TypesConfig",
    "AddType",
    "AddHandler",
    "ProxyRequests",
    "ProxyVia",
    "SSLSessionCache",
    "SSLSessionCacheTimeout",
    "SSLRandomSeed",
    "SSLPassPhraseDialog",
    "SSLStaplingCache",
    "SSLUseStapling",
    "Protocols",
    "DefaultRuntimeDir",
    "StartServers",
    "ServerLimit",
    "ThreadLimit",
    "ThreadsPerChild",
    "MaxRequestWorkers",
    "MaxConnectionsPerChild",
    "MinSpareThreads",
    "MaxSpareThreads",
    "EnableSendfile",
    "AccessFileName",
    "UseCanonicalName",
    "LimitRequestBody",
    "ProxyErrorOverride",
    "ProxyBadHeader",
    "SSLOptions",
    "BrowserMatch",
    "RewriteOptions",
    "RewriteBase",
    "ErrorDocument",
    "SSLProxyProtocol",
    "SSLProxyCipherSuite",
    "SSLCompression",
    "SSLSessionTickets",
    "SSLHonorCipherOrder",
    "ProxyAddHeaders",
    "ServerName",
    "NameVirtualHost",
];

#[derive(Default)]
struct Listener {
    addr: String,
    comments: Vec<String>,
    redirect_https: bool,
    /// `Redirect / https://fixed-host/` for every vhost on the address: `redirect_to`.
    redirect_to: Option<String>,
    /// Each vhost's redirect target: `Some(origin)` for `Redirect / https://fixed-host/`,
    /// `None` for the client's own host (`https://%{HTTP_HOST}...`), with the vhost's names.
    redirect_targets: Vec<(Option<String>, Vec<String>)>,
    proxies: bool,
    certs: Vec<Cert>,
}

struct Cert {
    comments: Vec<String>,
    cert: String,
    key: String,
    hosts: Vec<String>,
}

struct Upstream {
    comments: Vec<String>,
    server: String,
    tls: Option<bool>,
    basic_auth: Option<BasicAuth>,
}

/// A Basic credential from `RequestHeader`, the `<If>` host regex it is under (None: the whole
/// vhost), where it was, and a note for the comment.
type ScopedAuth = (Option<String>, BasicAuth, Origin, &'static str);

/// The timeouts Apache's directives set, in the order of the config's `timeouts:` block.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timeout {
    Connect,
    Read,
    UpgradedIdle,
}

impl Timeout {
    fn slot(self, t: &mut RawTimeouts) -> &mut Option<HumanDuration> {
        match self {
            Timeout::Connect => &mut t.connect,
            Timeout::Read => &mut t.read,
            Timeout::UpgradedIdle => &mut t.upgraded_idle,
        }
    }
}

/// Only a reference to the password (`password_file` or `password_env`), never the password.
type BasicAuth = RawBasicAuth;

enum Target {
    Named(String),
    Resolve {
        url: String,
        tls_verify: Option<bool>,
        basic_auth: Option<BasicAuth>,
        map: String,
    },
}

struct Route {
    comments: Vec<String>,
    host: Option<String>,
    path: String,
    target: Target,
    strip_prefix: bool,
    fallback: Option<String>,
    /// The vhost it came from (index), for `<If>`-scoped Basic auth.
    vhost: usize,
    /// A resolver route's `RewriteCond ${map:...} !^NULL$` guard: `Some(true)` when the map
    /// has no `|NULL` default (then the guard was always true in Apache).
    null_guard: Option<bool>,
    /// ProxyPassReverse URLs: `rewrite_location`.
    rewrite_location: Vec<String>,
    /// ProxyPassReverseCookieDomain / -Path: `cookie_domain` / `cookie_path`.
    cookie_domain: Vec<(String, String)>,
    cookie_path: Vec<(String, String)>,
}

/// `tls: { verify }` for an https/wss upstream.
fn verify(verify: bool) -> RawUpstreamTls {
    RawUpstreamTls {
        verify,
        sni: None,
        ca: None,
        client_cert: None,
        client_key: None,
    }
}

impl Listener {
    fn raw(&self) -> RawListener {
        // Only a listener that does nothing else redirects; one with TLS or routes serves them.
        let redirects = self.redirect_https && !self.proxies && self.certs.is_empty();
        RawListener {
            addr: self.addr.clone(),
            redirect_https: redirects && self.redirect_to.is_none(),
            redirect_to: self.redirect_to.clone().filter(|_| redirects),
            max_connections: None,
            max_connections_per_client: None,
            tls: (!self.certs.is_empty()).then(|| RawListenerTls {
                certs: self
                    .certs
                    .iter()
                    .enumerate()
                    .map(|(i, c)| RawCert {
                        cert: c.cert.clone().into(),
                        key: c.key.clone().into(),
                        // The first certificate is the default: it answers any host.
                        hosts: if i > 0 { c.hosts.clone() } else { Vec::new() },
                    })
                    .collect(),
                acme: None,
                hsts: None,
                client_ca: None,
                client_auth: None,
            }),
        }
    }
}

impl Route {
    fn raw(&self, resolver_headers: &BTreeMap<String, RawSecretRef>) -> RawRoute {
        let upstream = match &self.target {
            Target::Named(name) => RawUpstreamRef::Name(name.clone()),
            Target::Resolve {
                url,
                tls_verify,
                basic_auth,
                ..
            } => RawUpstreamRef::Resolve(RawResolver {
                resolve: url.clone(),
                headers: resolver_headers.clone(),
                cache: None,
                tls: tls_verify.map(verify),
                basic_auth: basic_auth.clone(),
            }),
        };
        let pairs = |p: &[(String, String)]| {
            (!p.is_empty()).then(|| p.iter().cloned().collect::<BTreeMap<_, _>>())
        };
        RawRoute {
            host: self.host.clone(),
            path: Some(self.path.clone()),
            upstream: Some(upstream),
            strip_prefix: self.strip_prefix,
            block: Vec::new(),
            novnc: false,
            auth: None,
            fallback: self
                .fallback
                .clone()
                .map(|redirect| RawFallback { redirect }),
            drop_websocket_protocol: false,
            forward_cookies: None,
            rewrite_location: match self.rewrite_location.as_slice() {
                [] => None,
                [one] => Some(RawRewriteLocation::One(one.clone())),
                many => Some(RawRewriteLocation::Many(many.to_vec())),
            },
            cookie_domain: pairs(&self.cookie_domain),
            cookie_path: pairs(&self.cookie_path),
            websocket: None,
        }
    }
}

#[derive(Default)]
struct Output {
    header: Vec<String>,
    listeners: Vec<Listener>,
    upstreams: BTreeMap<String, Upstream>,
    routes: Vec<Route>,
    timeouts: BTreeMap<Timeout, (u64, Vec<String>)>,
    headers: BTreeMap<String, (String, Vec<String>)>,
    /// `RequestHeader unset NAME`, with where each came from.
    removed_headers: BTreeMap<String, Vec<String>>,
    skipped: Vec<String>,
    ignored: BTreeMap<String, Vec<String>>,
    secret_files: Vec<(PathBuf, String)>,
    notices: Vec<String>,
    /// Where deskgate will behave differently from Apache on purpose (read before switching).
    notes: Vec<String>,
}

/// Settings that apply to a whole vhost (or, outside any, to all of them).
#[derive(Clone, Default)]
struct Scope {
    names: Vec<String>,
    ssl_engine: bool,
    cert: Option<(String, Origin)>,
    key: Option<String>,
    proxy_verify_off: bool,
    preserve_host: Option<bool>,
    maps: BTreeMap<String, (String, Origin)>,
    /// Basic auth set by `RequestHeader set Authorization`, with the `<If>` host regex.
    auth: Vec<ScopedAuth>,
    tls_notes: Vec<String>,
}

pub fn convert(files: &[PathBuf], opts: &ImportOptions) -> Result<Conversion, ImportError> {
    let resolver_headers = opts
        .resolver_headers
        .iter()
        .map(|h| header_ref(h))
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    if let Some(url) = &opts.resolver_url {
        check_resolver_url(url)?;
    }
    let nodes = parse_files(files)?;
    let mut c = Converter {
        out: Output::default(),
        opts,
        resolver_headers,
        secrets: 0,
        pending_fallbacks: Vec::new(),
        scoped_auth: Vec::new(),
        skip_guarded: 0,
        maybe_covered: Vec::new(),
        vhost_addrs: Vec::new(),
        route_keys: Vec::new(),
        proxy_rules: 0,
        timed_rules: 0,
    };
    c.out.header.push(format!(
        "Generated by `deskgate import apache` from {}.",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    c.out.header.push(
        "Check it with `deskgate -t -c FILE`; every block names the Apache line it came from."
            .into(),
    );
    let mut global = Scope::default();
    let mut vhosts = Vec::new();
    let mut listens = Vec::new();
    let has_vhosts = nodes
        .iter()
        .any(|n| matches!(n, Node::Section(s) if s.is("VirtualHost")));
    for n in &nodes {
        match n {
            Node::Section(s) if s.is("VirtualHost") => vhosts.push(s.clone()),
            Node::Directive(d) if d.is("Listen") => listens.push(d.clone()),
            // Without vhosts, the server's own directives are its one vhost (below).
            other if has_vhosts => c.setting(&mut global, other, true),
            _ => {}
        }
    }
    if vhosts.is_empty() {
        // A server without vhosts: its own directives on its Listen addresses.
        let addrs = listens
            .iter()
            .map(|d| d.arg(0))
            .collect::<Vec<_>>()
            .join(" ");
        let at = listens.first().map_or(
            Origin {
                file: files[0].display().to_string(),
                line: 1,
            },
            |d| d.at.clone(),
        );
        vhosts.push(Section {
            name: "VirtualHost".into(),
            args: if addrs.is_empty() {
                "*:80".into()
            } else {
                addrs
            },
            children: nodes
                .iter()
                .filter(|n| !matches!(n, Node::Directive(d) if d.is("Listen")))
                .cloned()
                .collect(),
            at,
        });
        global = Scope::default();
    }
    let ports_shared = shared_ports(&vhosts);
    for (i, v) in vhosts.iter().enumerate() {
        c.vhost(i, v, &global, &ports_shared);
    }
    c.apply_scoped_auth();
    if c.out.listeners.is_empty() {
        return Err(ImportError::NothingToListenOn {
            skipped: c.out.skipped,
        });
    }
    c.finish()
}

/// How many vhosts listen on each address, to know when routes need `host:`.
fn shared_ports(vhosts: &[Section]) -> BTreeMap<String, Vec<usize>> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, v) in vhosts.iter().enumerate() {
        for a in v.args.split_whitespace() {
            m.entry(listen_addr(a)).or_default().push(i);
        }
    }
    m
}

/// `*:443`, `_default_:443`, `[::]:443`, `127.0.0.1:8443` -> deskgate's `ip:port`.
fn listen_addr(a: &str) -> String {
    if a.parse::<u16>().is_ok() {
        // `Listen 80`: every address.
        return format!("[::]:{a}");
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => (h, p),
        _ => (a, "80"),
    };
    // A host name (`<VirtualHost hub.example.org:80>`): Apache resolves it at start-up; the
    // name selects the vhost like a ServerName, so deskgate listens on every address.
    let host = if host.parse::<std::net::IpAddr>().is_err()
        && host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_err()
        && !matches!(host, "*" | "_default_")
    {
        "*"
    } else {
        host
    };
    // Apache's `*` is every address, IPv4 and IPv6: `[::]` is dual-stack on Linux.
    let host = match host {
        "*" | "_default_" => "[::]",
        h => h,
    };
    format!("{host}:{port}")
}

struct Converter<'a> {
    out: Output,
    opts: &'a ImportOptions,
    /// `--resolver-header`s: each header's name and where its value is read from.
    resolver_headers: BTreeMap<String, RawSecretRef>,
    secrets: usize,
    /// `RewriteCond ${map:...} ^NULL$` redirects seen before their map's [P] rule:
    /// (vhost, map, location, origin lines).
    pending_fallbacks: Vec<(usize, String, String, Vec<String>)>,
    /// Each vhost's `RequestHeader set Authorization` (with its `<If>` host regex), applied
    /// once all routes exist.
    scoped_auth: Vec<Vec<ScopedAuth>>,
    /// RewriteRules still under a `RewriteRule - [S=N]` host guard.
    skip_guarded: usize,
    /// Proxy rules of a shape deskgate has no route for, unless a broader route of the same
    /// vhost already does the same (decided once the vhost's routes are all made).
    maybe_covered: Vec<MaybeCovered>,
    /// Each vhost's addresses and where it starts, by index.
    vhost_addrs: Vec<(Vec<String>, Origin, String)>,
    /// Proxy rules, and those with their own `timeout=`: when some have none, Apache gave
    /// them `ProxyTimeout`/`Timeout` (60 s by default), which deskgate's one `upgraded_idle`
    /// must not undercut.
    proxy_rules: usize,
    timed_rules: usize,
    /// Every prefix route each vhost asked for (vhost, host, path, upstream), including those
    /// another vhost had already made the same.
    route_keys: Vec<(usize, Option<String>, String, String)>,
}

/// A proxy rule equivalent to "paths under `public` go to `backend` + the rest on `url`".
struct MaybeCovered {
    vhost: usize,
    public: String,
    backend: String,
    upstream: String,
    at: Origin,
    text: String,
    why: String,
}

impl Converter<'_> {
    fn skip(&mut self, at: &Origin, text: &str, why: &str) {
        self.out.skipped.push(format!("{at}: {text}: {why}"));
    }

    fn ignore(&mut self, d: &Directive) {
        self.out
            .ignored
            .entry(canonical_name(&d.name))
            .or_default()
            .push(d.at.to_string());
    }

    fn ignore_named(&mut self, d: &Directive, what: &str) {
        self.out
            .ignored
            .entry(what.to_string())
            .or_default()
            .push(d.at.to_string());
    }

    fn timeout(&mut self, key: Timeout, secs: u64, why: String) {
        let e = self.out.timeouts.entry(key).or_insert((0, Vec::new()));
        e.0 = e.0.max(secs);
        e.1.push(why);
    }

    /// A directive that sets something for the whole scope (vhost or server). `top`: outside
    /// any vhost, where routing directives are not expected.
    fn setting(&mut self, scope: &mut Scope, node: &Node, top: bool) {
        let d = match node {
            Node::Directive(d) => d,
            Node::Section(s) => {
                if s.is("Directory")
                    || s.is("DirectoryMatch")
                    || s.is("Files")
                    || s.is("FilesMatch")
                {
                    self.out
                        .ignored
                        .entry(format!("<{}> (local files; deskgate serves none)", s.name))
                        .or_default()
                        .push(s.at.to_string());
                } else if top {
                    self.skip(
                        &s.at,
                        &format!("<{} {}>", s.name, s.args),
                        "outside a <VirtualHost>; not translated",
                    );
                }
                return;
            }
        };
        let name = canonical_name(&d.name);
        match name.as_str() {
            "ServerName" if !top => scope.names.insert(0, d.arg(0).to_ascii_lowercase()),
            "ServerAlias" => scope
                .names
                .extend(d.args.iter().map(|a| a.to_ascii_lowercase())),
            "SSLEngine" => scope.ssl_engine = d.arg(0).eq_ignore_ascii_case("on"),
            "SSLCertificateFile" => scope.cert = Some((d.arg(0).to_string(), d.at.clone())),
            "SSLCertificateKeyFile" => scope.key = Some(d.arg(0).to_string()),
            "SSLCertificateChainFile" => scope.tls_notes.push(format!(
                "{}: {}: deskgate reads the chain from the certificate file; give it the full chain (cert + chain, as certbot's fullchain.pem)",
                d.at, d.text
            )),
            "SSLProtocol" => scope.tls_notes.push(format!(
                "{}: {}: deskgate (rustls) offers TLS 1.2 and 1.3 only",
                d.at, d.text
            )),
            "SSLCipherSuite" => scope.tls_notes.push(format!(
                "{}: {}: deskgate uses rustls' AEAD suites (AES-128/256-GCM, ChaCha20-Poly1305, ECDHE only); no list to set",
                d.at, d.text
            )),
            "SSLProxyEngine" => {}
            "SSLOpenSSLConfCmd" if d.arg(0).eq_ignore_ascii_case("DHParameters") => self.ignore_named(d, "SSLOpenSSLConfCmd DHParameters (rustls offers no finite-field DHE)"),
            "AllowEncodedSlashes" if d.arg(0).eq_ignore_ascii_case("NoDecode") => self.ignore_named(d, "AllowEncodedSlashes NoDecode (deskgate forwards the path as received, %2F undecoded)"),
            "SSLProxyVerify" if d.arg(0).eq_ignore_ascii_case("none") => scope.proxy_verify_off = true,
            "SSLProxyCheckPeerCN" | "SSLProxyCheckPeerName" | "SSLProxyCheckPeerExpire"
                if d.arg(0).eq_ignore_ascii_case("off") =>
            {
                scope.proxy_verify_off = true
            }
            "ProxyPreserveHost" => scope.preserve_host = Some(d.arg(0).eq_ignore_ascii_case("on")),
            "ProxyTimeout" | "Timeout" => {
                if let Ok(s) = d.arg(0).parse() {
                    self.timeout(Timeout::Read, s, format!("{}: {}", d.at, d.text));
                }
            }
            "RewriteEngine" | "RewriteMap" if top => self.rewrite_setting(scope, d),
            "RequestHeader" => self.request_header(scope, d, &HeaderCond::Always),
            "SetEnvIf" | "SetEnvIfNoCase" if mentions_upgrade(&d.text) => self.ignore_workaround(d),
            n if NO_ROUTING_EFFECT.contains(&n) => self.ignore(d),
            _ if top => self.skip(&d.at, &d.text, "outside a <VirtualHost>; not translated"),
            _ => {}
        }
    }

    fn rewrite_setting(&mut self, scope: &mut Scope, d: &Directive) {
        if d.is("RewriteMap") {
            let spec = d.arg(1);
            scope
                .maps
                .insert(d.arg(0).to_string(), (spec.to_string(), d.at.clone()));
        }
    }

    fn ignore_workaround(&mut self, d: &Directive) {
        self.out
            .ignored
            .entry(
                "Upgrade/Connection workarounds (deskgate passes WebSocket upgrades natively)"
                    .into(),
            )
            .or_default()
            .push(format!("{} {}", d.at, d.text));
    }

    /// `RequestHeader ...` under `cond` (the vhost, or an `<If>` on the host). A header that
    /// carries a credential is named in reports, never shown; a condition the importer cannot
    /// express makes it refuse the header rather than send it more widely than Apache did.
    fn request_header(&mut self, scope: &mut Scope, d: &Directive, cond: &HeaderCond) {
        let action = d.arg(0).to_ascii_lowercase();
        let header = d.arg(1).to_string();
        let lower = header.to_ascii_lowercase();
        if lower == "upgrade" || lower == "connection" {
            return self.ignore_workaround(d);
        }
        // `set|setifempty|add|append|merge NAME VALUE [early|env=...|expr=...]`,
        // `edit|edit* NAME REGEX REPLACEMENT [...]`, `unset NAME [...]`.
        let value_args = match action.as_str() {
            "unset" => 0,
            "edit" | "edit*" => 2,
            _ => 1,
        };
        let condition = d
            .args
            .get(2 + value_args..)
            .unwrap_or(&[])
            .iter()
            .find(|a| !a.eq_ignore_ascii_case("early"));
        let named = format!("RequestHeader {action} {header}");
        if is_secret_header(&header) {
            let refuse = |c: &mut Self, why: &str| c.skip(&d.at, &named, why);
            if let HeaderCond::Refused(why) = cond {
                return refuse(self, &format!("a credential under a condition deskgate cannot express ({why}); not translated rather than sent more widely"));
            }
            if let Some(c) = condition {
                let kind = c.split('=').next().unwrap_or(c);
                return refuse(self, &format!("a credential under a condition ({kind}=...) deskgate cannot express; not translated rather than sent more widely"));
            }
            if !matches!(action.as_str(), "set" | "setifempty") {
                return refuse(self, "only `set` of a Basic credential is translated (as basic_auth); the value is not copied");
            }
            let basic = (lower == "authorization")
                .then(|| parse_basic(d.arg(2)))
                .flatten();
            let Some((user, password)) = basic else {
                return refuse(self, "a credential deskgate cannot inject from a file (only a Basic `Authorization` becomes basic_auth, its password in a 0600 file); the value is not copied");
            };
            let auth = self.basic_auth(&user, &password, &d.at);
            let regex = match cond {
                HeaderCond::Host(r) => Some(r.clone()),
                _ => None,
            };
            let note = if action == "setifempty" {
                " (setifempty: deskgate injects it even when the browser sent its own)"
            } else {
                ""
            };
            scope.auth.push((regex, auth, d.at.clone(), note));
            return;
        }
        if lower.starts_with("x-forwarded-")
            && action == "set"
            && matches!(&lower[12..], "for" | "proto" | "host" | "port")
        {
            self.out
                .ignored
                .entry(
                    "X-Forwarded-For/-Proto/-Host/-Port (deskgate sets them itself; -Port is the listener's port)".into(),
                )
                .or_default()
                .push(d.at.to_string());
            return;
        }
        if action == "unset" {
            // Removing a header in more places than Apache did is the safe direction (the
            // backend loses a browser-sent value, never gains one), so a host condition does
            // not block it; an env=/expr= condition might mean "only sometimes", so it does.
            if condition.is_some() {
                return self.skip(&d.at, &d.text, "a conditional unset (env=/expr=): not translated; the browser's own copy would reach the backend");
            }
            self.out
                .removed_headers
                .entry(header.clone())
                .or_default()
                .push(format!("{}: RequestHeader unset {header}", d.at));
            return;
        }
        if action != "set" {
            return self.skip(&d.at, &d.text, "only `RequestHeader set` is translated (deskgate adds headers; it does not unset, append or edit the browser's)");
        }
        if let HeaderCond::Host(_) | HeaderCond::Refused(_) = cond {
            return self.skip(
                &d.at,
                &d.text,
                "a header for some hosts only: deskgate's proxy_headers apply to every request",
            );
        }
        if condition.is_some() {
            return self.skip(
                &d.at,
                &d.text,
                "a conditional header (env=/expr=): not translated",
            );
        }
        let value = d.arg(2);
        if value.contains("%{") {
            // Apache overwrote whatever the browser sent (often an identity from its login,
            // `remote-user`); deskgate cannot compute the value, but it must not pass the
            // browser's own copy on either.
            self.out
                .removed_headers
                .entry(header.clone())
                .or_default()
                .push(format!("{}: RequestHeader set {header} %{{...}} (the browser's copy must not reach the backend)", d.at));
            return self.skip(
                &d.at,
                &d.text,
                "a value Apache computes per request: deskgate adds fixed values only",
            );
        }
        self.out.headers.insert(
            header.clone(),
            (
                value.to_string(),
                vec![format!("{}: RequestHeader set {header} ...", d.at)],
            ),
        );
    }

    /// Moves a password out of the Apache file: into a secret file next to the output, or to
    /// an environment variable the operator sets. Never into the YAML.
    fn basic_auth(&mut self, user: &str, password: &str, at: &Origin) -> BasicAuth {
        self.secrets += 1;
        let (password_file, password_env) = match &self.opts.secrets_dir {
            Some(dir) => {
                let path = dir.join(format!("basic-auth-{}", self.secrets));
                self.out
                    .secret_files
                    .push((path.clone(), format!("{password}\n")));
                (Some(path), None)
            }
            None => {
                let var = format!("DESKGATE_BASIC_AUTH_{}", self.secrets);
                self.out.notices.push(format!(
                    "set {var} to the password of user `{user}` from {at} (not written anywhere)"
                ));
                (None, Some(var))
            }
        };
        BasicAuth {
            user: user.to_string(),
            password_file,
            password_env,
        }
    }

    fn vhost(
        &mut self,
        index: usize,
        v: &Section,
        global: &Scope,
        shared: &BTreeMap<String, Vec<usize>>,
    ) {
        self.vhost_addrs.push((
            v.args.split_whitespace().map(listen_addr).collect(),
            v.at.clone(),
            v.args.clone(),
        ));
        if v.args.contains("${") {
            return self.skip(&v.at, &format!("<VirtualHost {}>", v.args), "a `${VARIABLE}` that is not defined (Apache takes it from `Define` or its environment): Define it in the files given, or write the address");
        }
        let mut scope = global.clone();
        scope.names.clear();
        // Settings first: in Apache their order within a vhost does not matter.
        for n in &v.children {
            match n {
                Node::Section(s) if s.is("If") => {
                    let cond = header_cond_of_if(&s.args);
                    for c in &s.children {
                        match c {
                            Node::Directive(d) if d.is("RequestHeader") => {
                                self.request_header(&mut scope, d, &cond)
                            }
                            Node::Directive(d) => self.skip(&d.at, &d.text, &format!("under <If {}>: only `RequestHeader set` for a host is translated", s.args)),
                            Node::Section(inner) => self.skip(&inner.at, &format!("<{}>", inner.name), "nested in <If>: not translated"),
                        }
                    }
                }
                Node::Directive(d) if d.is("RewriteMap") => self.rewrite_setting(&mut scope, d),
                other => self.setting(&mut scope, other, false),
            }
        }
        self.scoped_auth.push(scope.auth.clone());
        let addrs: Vec<String> = v.args.split_whitespace().map(listen_addr).collect();
        let tls = scope.ssl_engine;
        // Routes need `host:` when the vhost shares its address with others; the first vhost
        // on an address is Apache's default for unknown hosts, so it also gets host-less routes.
        let shares = addrs
            .iter()
            .any(|a| shared.get(a).is_some_and(|v| v.len() > 1));
        let first = addrs
            .iter()
            .all(|a| shared.get(a).and_then(|v| v.first()) == Some(&index));
        let mut hosts: Vec<Option<String>> = Vec::new();
        if shares {
            for n in &scope.names {
                match host_pattern(n) {
                    Some(h) => hosts.push(Some(h)),
                    None => self.skip(
                        &v.at,
                        &format!("ServerName/ServerAlias {n}"),
                        "deskgate matches exact hosts, `*.suffix` or one `*` within a label",
                    ),
                }
            }
            if first {
                hosts.push(None);
            }
        } else {
            hosts.push(None);
        }
        let routes_before = self.out.routes.len();
        let mut redirect: Option<(String, Option<String>)> = None;
        let mut conds: Vec<&Directive> = Vec::new();
        let mut reverse: Vec<(String, String, Origin)> = Vec::new();
        let mut cookies: Vec<(bool, String, String, Origin)> = Vec::new();
        self.skip_guarded = 0;
        for n in &v.children {
            match n {
                Node::Directive(d) => match canonical_name(&d.name).as_str() {
                    "ProxyPass" => self.proxy_pass(index, &scope, &hosts, d, None),
                    "ProxyPassMatch" => self.proxy_pass_match(index, &scope, &hosts, d),
                    "ProxyPassReverse" => {
                        reverse.push((d.arg(0).to_string(), d.arg(1).to_string(), d.at.clone()))
                    }
                    "ProxyPassReverseCookiePath" | "ProxyPassReverseCookieDomain" => {
                        let domain = d.is("ProxyPassReverseCookieDomain");
                        if d.args.len() != 2 {
                            self.skip(
                                &d.at,
                                &d.text,
                                "only `INTERNAL PUBLIC` (no interpolate) is translated",
                            );
                        } else if d.arg(0) == d.arg(1) {
                            self.out
                                .ignored
                                .entry(format!(
                                    "{} X X (rewrites nothing)",
                                    canonical_name(&d.name)
                                ))
                                .or_default()
                                .push(d.at.to_string());
                        } else {
                            cookies.push((
                                domain,
                                d.arg(0).to_string(),
                                d.arg(1).to_string(),
                                d.at.clone(),
                            ));
                        }
                    }
                    "Redirect" | "RedirectPermanent" => {
                        let (path, url) = redirect_args(d);
                        // Only `/ https://host[:port]/`: Apache appends the rest of the path;
                        // a target with its own path is another redirect.
                        let origin = url.strip_prefix("https://").and_then(|r| {
                            let (host, rest) = r.split_at(r.find('/').unwrap_or(r.len()));
                            (matches!(rest, "" | "/") && !host.is_empty() && !host.contains('@'))
                                .then(|| format!("https://{host}"))
                        });
                        match origin {
                            Some(o) if path == "/" && !tls => {
                                redirect = Some((format!("{}: {}", d.at, d.text), Some(o)))
                            }
                            _ => self.skip(&d.at, &d.text, "only `Redirect / https://host/` on a plain-HTTP vhost is translated (as redirect_to)"),
                        }
                    }
                    "RewriteCond" => conds.push(d),
                    "RewriteRule" => {
                        let these = std::mem::take(&mut conds);
                        if let Some(r) = self.rewrite_rule(index, &scope, &hosts, &these, d, tls) {
                            redirect = Some(r);
                        }
                    }
                    "RewriteEngine" | "RewriteMap" | "RequestHeader" | "SetEnvIf"
                    | "SetEnvIfNoCase" => {}
                    "AllowEncodedSlashes" if d.arg(0).eq_ignore_ascii_case("NoDecode") => {}
                    "SSLOpenSSLConfCmd" if d.arg(0).eq_ignore_ascii_case("DHParameters") => {}
                    n if scope_directive(n) => {}
                    _ => self.skip(
                        &d.at,
                        &d.text,
                        "not translated (no deskgate equivalent known to the importer)",
                    ),
                },
                Node::Section(s) if s.is("Location") => {
                    let location = s.args.trim_matches('"');
                    let auth: Vec<&Directive> = s
                        .children
                        .iter()
                        .filter_map(|c| match c {
                            Node::Directive(d) if is_authentication(d) => Some(d),
                            _ => None,
                        })
                        .collect();
                    if let Some(first) = auth.first() {
                        let names: Vec<String> =
                            auth.iter().map(|d| canonical_name(&d.name)).collect();
                        self.skip(&first.at, &format!("<Location {location}> authentication ({})", dedup(names).join(", ")), "NOT carried over: deskgate would serve this path to anyone; put an `auth:` check on the route before switching");
                    }
                    let upgrade_rules = location_upgrade_workaround(&s.children);
                    for c in &s.children {
                        match c {
                            Node::Directive(d) if is_authentication(d) => {}
                            // `<Location "/"> Redirect permanent "https://%{HTTP_HOST}%{REQUEST_URI}"`
                            // (Apache 2.4.19's expression form): the whole vhost redirects.
                            Node::Directive(d)
                                if location == "/"
                                    && !tls
                                    && (d.is("Redirect") || d.is("RedirectPermanent"))
                                    && location_redirect(d).is_some() =>
                            {
                                redirect = Some((format!("{}: {}", d.at, d.text), location_redirect(d).flatten()));
                            }
                            Node::Directive(d) if upgrade_rules && (d.is("RewriteEngine") || d.is("RewriteCond") || d.is("RewriteRule")) => self.ignore_workaround(d),
                            Node::Directive(d) if d.is("ProxyPass") => {
                                self.proxy_pass(index, &scope, &hosts, d, Some(s.args.trim_matches('"')))
                            }
                            Node::Directive(d) if d.is("ProxyPassReverse") => reverse.push((
                                s.args.trim_matches('"').to_string(),
                                d.arg(0).to_string(),
                                d.at.clone(),
                            )),
                            Node::Directive(d) if is_access_grant(d) => {}
                            Node::Directive(d) if d.is("ProxyPreserveHost") && d.arg(0).eq_ignore_ascii_case("on") => {}
                            Node::Directive(d) if d.is("RequestHeader") && is_forwarded_set(d) => {
                                self.out
                                    .ignored
                                    .entry("X-Forwarded-For/-Proto/-Host/-Port (deskgate sets them itself; -Port is the listener's port)".into())
                                    .or_default()
                                    .push(d.at.to_string());
                            }
                            Node::Directive(d) => self.skip(&d.at, &d.text, &format!("in <Location {}>: not translated (access control and per-location settings need deskgate's `auth:`/`block:`)", s.args)),
                            Node::Section(inner) => self.skip(&inner.at, &format!("<{}>", inner.name), "nested in <Location>: not translated"),
                        }
                    }
                }
                Node::Section(s)
                    if s.is("Proxy")
                        && s.children
                            .iter()
                            .any(|c| matches!(c, Node::Directive(d) if is_authentication(d))) =>
                {
                    self.skip(&s.at, &format!("<Proxy {}> with authentication", s.args), "NOT carried over: the login in this <Proxy> guarded every proxied request; deskgate would serve them to anyone (put an `auth:` check on the routes)");
                }
                Node::Section(s) if s.is("Proxy") && grants_all(s) => {
                    self.out
                        .ignored
                        .entry("<Proxy *> granting everyone (deskgate has no forward proxy; the reverse proxy is open, as there)".into())
                        .or_default()
                        .push(s.at.to_string());
                }
                Node::Section(s)
                    if s.is("If")
                        || s.is("Directory")
                        || s.is("DirectoryMatch")
                        || s.is("Files")
                        || s.is("FilesMatch") => {}
                Node::Section(s) => {
                    self.skip(&s.at, &format!("<{} {}>", s.name, s.args), "not translated")
                }
            }
        }
        for c in conds {
            self.skip(
                &c.at,
                &c.text,
                "a RewriteCond without a RewriteRule after it",
            );
        }
        self.settle_covered();
        self.host_routes_after_rewrites(index, routes_before);
        self.response_rewrites(index, routes_before, reverse, cookies);
        let proxies = self.out.routes.len() > routes_before;
        let mut comments = vec![format!(
            "{}: <VirtualHost {}>{}",
            v.at,
            v.args,
            names_note(&scope.names)
        )];
        if scope.preserve_host != Some(true) && proxies {
            comments.push("  Apache without `ProxyPreserveHost On` sends the backend's host:port as Host; deskgate passes the browser's Host".into());
        }
        if let Some((r, to)) = &redirect {
            let what = to
                .as_ref()
                .map_or("redirect_https".to_string(), |o| format!("redirect_to {o}"));
            comments.push(format!("  {r}: {what}"));
        }
        for addr in addrs {
            let existing = self.out.listeners.iter().position(|l| l.addr == addr);
            let i = existing.unwrap_or_else(|| {
                self.out.listeners.push(Listener {
                    addr: addr.clone(),
                    redirect_https: true,
                    ..Listener::default()
                });
                self.out.listeners.len() - 1
            });
            let l = &mut self.out.listeners[i];
            if existing.is_none() && addr.starts_with("[::]:") {
                // Not both `0.0.0.0` and `[::]`: on Linux the second would find the port taken.
                l.comments.push("[::] is every address, IPv4 too (dual-stack, as Apache's `*`); where IPv6 is off, write 0.0.0.0".into());
            }
            l.comments.extend(comments.iter().cloned());
            l.proxies |= proxies;
            l.redirect_https &= redirect.is_some() && !tls;
            if let Some((_, to)) = &redirect {
                l.redirect_targets.push((to.clone(), scope.names.clone()));
            }
            if tls {
                match &scope.cert {
                    Some((cert, at)) => {
                        let key = scope.key.clone().unwrap_or_else(|| cert.clone());
                        let mut cc =
                            vec![format!("{at}: SSLCertificateFile / SSLCertificateKeyFile")];
                        cc.extend(scope.tls_notes.iter().map(|n| n.to_string()));
                        if let Some(live) = letsencrypt_name(cert) {
                            cc.push(format!("certbot's files for {live}: deskgate can obtain and renew them itself instead:"));
                            cc.push(format!("  acme: {{ directory: \"https://acme-v02.api.letsencrypt.org/directory\", email: you@example.org, hosts: [{}], storage: /var/lib/deskgate/acme }}", scope.names.iter().filter(|n| !n.contains('*')).cloned().collect::<Vec<_>>().join(", ")));
                        }
                        if !l.certs.iter().any(|c| c.cert == *cert) {
                            let hosts = scope
                                .names
                                .iter()
                                .filter(|n| cert_host(n))
                                .cloned()
                                .collect();
                            l.certs.push(Cert {
                                comments: cc,
                                cert: cert.clone(),
                                key,
                                hosts,
                            });
                        }
                    }
                    None => self.skip(
                        &v.at,
                        &format!("<VirtualHost {}>", v.args),
                        "SSLEngine on without SSLCertificateFile",
                    ),
                }
            }
        }
    }

    /// In Apache, mod_rewrite runs before ProxyPass: on a host a whole-path `[P]` lookup takes
    /// (a resolver route), this vhost's ProxyPass prefixes never answered. Dropped there, so
    /// `desktop-alice.../api/x` reaches the desktop (KasmVNC serves its own `/api/`).
    fn host_routes_after_rewrites(&mut self, vhost: usize, from: usize) {
        let taken: Vec<String> = self.out.routes[from..]
            .iter()
            .filter(|r| matches!(r.target, Target::Resolve { .. }) && r.path == "/")
            .filter_map(|r| r.host.clone())
            .collect();
        let before = self.out.routes.len();
        let mut dropped = Vec::new();
        let mut i = from;
        while i < self.out.routes.len() {
            let r = &self.out.routes[i];
            let shadowed = r.vhost == vhost
                && matches!(r.target, Target::Named(_))
                && r.host.as_ref().is_some_and(|h| taken.contains(h));
            if shadowed {
                let r = self.out.routes.remove(i);
                dropped.push(format!("{} on {}", r.path, r.host.unwrap_or_default()));
            } else {
                i += 1;
            }
        }
        if self.out.routes.len() < before {
            self.out
                .ignored
                .entry(SHADOWED_BY_REWRITE.into())
                .or_default()
                .extend(dropped);
        }
    }

    /// ProxyPassReverse (`rewrite_location`) and ProxyPassReverseCookieDomain/-Path
    /// (`cookie_domain`/`cookie_path`) on the vhost's routes.
    fn response_rewrites(
        &mut self,
        vhost: usize,
        from: usize,
        reverse: Vec<(String, String, Origin)>,
        cookies: Vec<(bool, String, String, Origin)>,
    ) {
        for (path, url, at) in reverse {
            let path = with_slash(&path);
            let usable = Url::parse(&url)
                .is_some_and(|u| matches!(u.scheme.as_str(), "http" | "https"))
                && userinfo(&url).is_none();
            let mut used = false;
            for r in self.out.routes[from..]
                .iter_mut()
                .filter(|r| r.vhost == vhost && r.path == path)
            {
                if usable {
                    if !r.rewrite_location.contains(&url) {
                        r.rewrite_location.push(url.clone());
                    }
                    r.comments.push(format!(
                        "  {at}: ProxyPassReverse {path} ...: rewrite_location"
                    ));
                    used = true;
                }
            }
            if !used {
                self.out
                    .ignored
                    .entry("ProxyPassReverse for a path no translated route serves, or to a ws:// URL (no Location is one)".into())
                    .or_default()
                    .push(at.to_string());
            }
        }
        for (domain, internal, public, at) in cookies {
            let mut used = false;
            for r in self.out.routes[from..]
                .iter_mut()
                .filter(|r| r.vhost == vhost)
            {
                let list = if domain {
                    &mut r.cookie_domain
                } else {
                    &mut r.cookie_path
                };
                list.push((internal.clone(), public.clone()));
                let what = if domain { "Domain" } else { "Path" };
                r.comments.push(format!(
                    "  {at}: ProxyPassReverseCookie{what} {internal} {public}: cookie_{}",
                    what.to_ascii_lowercase()
                ));
                used = true;
            }
            if !used {
                self.out
                    .ignored
                    .entry("ProxyPassReverseCookie* in a vhost without translated routes".into())
                    .or_default()
                    .push(at.to_string());
            }
        }
    }

    /// A rule with no route of its own: kept for `settle_covered`.
    fn maybe_covered(&mut self, vhost: usize, public: &str, url: &Url, d: &Directive, why: &str) {
        self.maybe_covered.push(MaybeCovered {
            vhost,
            public: public.to_string(),
            backend: url.path.clone(),
            upstream: upstream_name(url),
            at: d.at.clone(),
            text: d.text.clone(),
            why: why.to_string(),
        });
    }

    /// `ProxyPass /push/ws ws://h:7867/ws` next to `ProxyPass /push/ http://h:7867/` (which
    /// strips `/push`): the broader route already sends `/push/ws` to `/ws` on the same server,
    /// WebSockets included. Such rules are no gap; the others are.
    fn settle_covered(&mut self) {
        let pending: Vec<MaybeCovered> = std::mem::take(&mut self.maybe_covered);
        for m in pending {
            let covered = self.out.routes.iter().any(|r| {
                let Target::Named(up) = &r.target else {
                    return false;
                };
                let under = m.public.starts_with(&r.path) || with_slash(&m.public) == r.path;
                let expected = if r.strip_prefix {
                    format!("/{}", m.public.get(r.path.len()..).unwrap_or(""))
                } else {
                    m.public.clone()
                };
                r.vhost == m.vhost
                    && *up == m.upstream
                    && under
                    && (expected == m.backend || with_slash(&expected) == with_slash(&m.backend))
            });
            if covered {
                self.out
                    .ignored
                    .entry("proxy rules a broader route already carries (same server, same path mapping, WebSockets included)".into())
                    .or_default()
                    .push(m.at.to_string());
            } else {
                self.skip(&m.at, &m.text, &m.why);
            }
        }
    }

    fn upstream_for(&mut self, url: &Url, scope: &Scope, at: &str) -> String {
        let tls = matches!(url.scheme.as_str(), "https" | "wss");
        let name = upstream_name(url);
        let u = self
            .out
            .upstreams
            .entry(name.clone())
            .or_insert_with(|| Upstream {
                comments: Vec::new(),
                server: format!("{}:{}", url.host, url.port),
                tls: tls.then_some(!scope.proxy_verify_off),
                basic_auth: None,
            });
        u.comments.push(at.to_string());
        if tls && scope.proxy_verify_off {
            u.comments
                .push("  SSLProxyVerify none / SSLProxyCheckPeer* off: certificate not checked, this upstream only".into());
        }
        name
    }

    fn add_route(&mut self, route: Route) {
        if let Target::Named(n) = &route.target {
            self.route_keys.push((
                route.vhost,
                route.host.clone(),
                route.path.clone(),
                n.clone(),
            ));
        }
        let key = |r: &Route| (r.host.clone(), r.path.clone());
        if let Some(existing) = self.out.routes.iter().find(|r| key(r) == key(&route)) {
            if matches!(existing.target, Target::Resolve { .. }) && existing.vhost == route.vhost {
                self.out
                    .ignored
                    .entry(SHADOWED_BY_REWRITE.into())
                    .or_default()
                    .push(format!(
                        "{} on {}",
                        route.path,
                        route.host.unwrap_or_default()
                    ));
                return;
            }
            let same = matches!((&existing.target, &route.target), (Target::Named(a), Target::Named(b)) if a == b)
                && existing.strip_prefix == route.strip_prefix;
            if !same {
                let first = existing.comments.first().cloned().unwrap_or_default();
                let this = route.comments.first().cloned().unwrap_or_default();
                self.out.skipped.push(format!(
                    "{this}: the same host and path as {first} with another target (deskgate's routes apply to every listener)"
                ));
            }
            return;
        }
        self.out.routes.push(route);
    }

    fn proxy_pass(
        &mut self,
        vhost: usize,
        scope: &Scope,
        hosts: &[Option<String>],
        d: &Directive,
        location: Option<&str>,
    ) {
        let (path, rest) = match location {
            Some(loc) => (loc.to_string(), &d.args[..]),
            None => (d.arg(0).to_string(), d.args.get(1..).unwrap_or(&[])),
        };
        let Some(target) = rest.first() else {
            return self.skip(&d.at, &d.text, "no target");
        };
        if userinfo(target).is_some() {
            return self.skip(
                &d.at,
                &d.text,
                "a user:password in the URL (not copied; give the upstream basic_auth with a password_file)",
            );
        }
        if target == "!" {
            return self.skip(
                &d.at,
                &d.text,
                "an exclusion (served by Apache itself); deskgate serves no local files",
            );
        }
        let Some(url) = Url::parse(target) else {
            return self.skip(
                &d.at,
                &d.text,
                "the target is not an http(s):// or ws(s):// URL",
            );
        };
        let mut comments = vec![format!("{}: {}", d.at, d.text)];
        for param in &rest[1..] {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.to_ascii_lowercase().as_str() {
                "upgrade" => comments.push(format!("  {param}: deskgate passes WebSocket upgrades on every route natively")),
                "timeout" => match v.parse() {
                    Ok(s) => {
                        self.timed_rules += 1;
                        self.timeout(Timeout::UpgradedIdle, s, format!("{}: ProxyPass ... {param} (how long an open desktop may be quiet)", d.at))
                    }
                    Err(_) => comments.push(format!("  {param}: not a number of seconds; not translated")),
                },
                "connectiontimeout" => match v.parse() {
                    Ok(s) => self.timeout(Timeout::Connect, s, format!("{}: ProxyPass ... {param}", d.at)),
                    Err(_) => comments.push(format!("  {param}: not a number of seconds; not translated")),
                },
                "retry" => comments.push(format!("  {param}: Apache waits this long before retrying a failed backend; deskgate retries a failed connect at once when the upstream has `retries:`")),
                "keepalive" => comments.push(format!("  {param}: deskgate keeps upstream connections alive and pooled by default")),
                _ => comments.push(format!("  {param}: not translated")),
            }
        }
        self.prefix_routes(vhost, scope, hosts, d, &path, &url, comments);
    }

    /// Routes for a path prefix, on each of the vhost's hosts, to the upstream `url` names:
    /// the prefix is stripped when the backend path is `/` and kept when it is the prefix
    /// itself; any other backend path is skipped. `comments[0]` names the Apache line.
    #[allow(clippy::too_many_arguments)]
    fn prefix_routes(
        &mut self,
        vhost: usize,
        scope: &Scope,
        hosts: &[Option<String>],
        d: &Directive,
        prefix: &str,
        url: &Url,
        comments: Vec<String>,
    ) {
        let route_path = with_slash(prefix);
        let strip = if url.path == "/" {
            route_path != "/"
        } else if with_slash(&url.path) == route_path {
            false
        } else {
            return self.maybe_covered(vhost, prefix, url, d, "the backend path differs from the route's (deskgate strips a prefix or keeps the path; it does not replace one with another)");
        };
        self.proxy_rules += 1;
        let upstream = self.upstream_for(url, scope, &comments[0]);
        for host in hosts {
            self.add_route(Route {
                comments: comments.clone(),
                host: host.clone(),
                path: route_path.clone(),
                target: Target::Named(upstream.clone()),
                strip_prefix: strip,
                fallback: None,
                vhost,
                null_guard: None,
                rewrite_location: Vec::new(),
                cookie_domain: Vec::new(),
                cookie_path: Vec::new(),
            });
        }
    }

    /// The shapes that are prefixes in disguise: `^/prefix/(.*)$ http://h/$1` (stripped) and
    /// `^(/prefix/.*)$ http://h$1` (kept).
    fn proxy_pass_match(
        &mut self,
        vhost: usize,
        scope: &Scope,
        hosts: &[Option<String>],
        d: &Directive,
    ) {
        let (pattern, target) = (d.arg(0), d.arg(1));
        let shape = if let Some(prefix) = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix("(.*)$").or(p.strip_suffix("(.*)")))
        {
            target
                .strip_suffix("$1")
                .map(|t| (prefix.to_string(), t.to_string()))
        } else {
            None
        };
        let translated = shape.and_then(|(prefix, base)| {
            let url = Url::parse(&base)?;
            literal(&prefix).then_some((prefix, url))
        });
        match translated {
            Some((prefix, url)) => {
                let comments = vec![format!("{}: {}", d.at, d.text)];
                self.prefix_routes(vhost, scope, hosts, d, &prefix, &url, comments);
            }
            None => match regex_as_prefix_map(pattern, target) {
                Some((public, url)) => self.maybe_covered(vhost, &public, &url, d, "only `^/prefix/(.*)$ URL/$1` shapes are translated (deskgate routes by prefix, not regex)"),
                None => self.skip(&d.at, &d.text, "only `^/prefix/(.*)$ URL/$1` shapes are translated (deskgate routes by prefix, not regex)"),
            },
        }
    }

    /// A RewriteRule with the RewriteConds before it. Returns the redirect it stands for when
    /// it sends every request to HTTPS.
    fn rewrite_rule(
        &mut self,
        vhost: usize,
        scope: &Scope,
        hosts: &[Option<String>],
        conds: &[&Directive],
        d: &Directive,
        tls: bool,
    ) -> Option<(String, Option<String>)> {
        let (pattern, target) = (d.arg(0), d.arg(1));
        let flags = Flags::parse(d.arg(2));
        let guarded = self.skip_guarded > 0;
        self.skip_guarded = self.skip_guarded.saturating_sub(1);
        let text = std::iter::once(d)
            .chain(conds.iter().copied())
            .map(|x| format!("{}: {}", x.at, x.text))
            .collect::<Vec<_>>();
        let is_host = |c: &&&Directive| {
            c.arg(0).eq_ignore_ascii_case("%{HTTP_HOST}")
                || c.arg(0).eq_ignore_ascii_case("%{SERVER_NAME}")
        };
        let is_upgrade = |c: &&&Directive| {
            c.arg(0).eq_ignore_ascii_case("%{HTTP:Upgrade}")
                || c.arg(0).eq_ignore_ascii_case("%{HTTP:Connection}")
        };
        // `RewriteRule .* - [E=UPGRADE:%{HTTP:Upgrade}]` and friends: only there to carry
        // Upgrade through older Apache versions.
        if target == "-" && flags.env_only && mentions_upgrade(&d.text) {
            for x in std::iter::once(d).chain(conds.iter().copied()) {
                self.ignore_workaround(x);
            }
            return None;
        }
        // `RewriteCond %{HTTP_HOST} ^hub\. ; RewriteRule .* - [S=N]`: skip the next N rules on
        // the main host. deskgate's routes are per host already; the N rules must still name
        // their hosts (a condition or a `desktop-*` alias), checked below.
        if let (Some(n), "-") = (flags.skip, target) {
            if !conds.is_empty() && conds.iter().all(|c| is_host(&c)) && flags.only_skip {
                self.skip_guarded = n;
                self.out
                    .ignored
                    .entry("RewriteRule - [S=N] by host (deskgate's host routing keeps those rules off that host)".into())
                    .or_default()
                    .push(d.at.to_string());
                return None;
            }
        }
        if target == "-" && flags.only_skip && flags.skip.is_none() && !flags.proxy {
            // `RewriteRule ^/x$ - [L]`: stop rewriting, so ProxyPass answers, as deskgate's
            // routes do.
            self.out
                .ignored
                .entry(
                    "RewriteRule - [L] (leaves the request to ProxyPass, as deskgate's routes do)"
                        .into(),
                )
                .or_default()
                .push(d.at.to_string());
            return None;
        }
        if userinfo(target).is_some() {
            self.skip(&d.at, &d.text, "a target with a user:password (not copied)");
            return None;
        }
        let host_cond = conds.iter().find(|c| is_host(c));
        let upgrade_cond = conds.iter().any(|c| is_upgrade(&c));
        let null_cond = conds.iter().find(|c| is_no_answer(c.arg(0), c.arg(1)));
        // `${map:key} !^NULL$` (the production shape) or `!^$`: the lookup answered.
        let answer_guard = conds.iter().find(|c| is_answer_guard(c.arg(0), c.arg(1)));
        // `${map:key} ^NULL$` without a `|NULL` default never matches: Apache turns a map's
        // NULL answer into an empty string. The rule has no effect in Apache; none here either.
        let never = conds.iter().find(|c| {
            c.arg(0).starts_with("${")
                && matches!(c.arg(1), "^NULL$" | "=NULL")
                && !c.arg(0).contains('|')
        });
        if let Some(c) = never {
            self.out
                .ignored
                .entry("RewriteCond ${map:...} ^NULL$ without a |NULL default (never true in Apache: a NULL answer is an empty string)".into())
                .or_default()
                .push(format!("{} {}", c.at, d.at));
            return None;
        }
        if flags.redirect.is_some() {
            if let Some(nc) = null_cond {
                let map = map_name(nc.arg(0)).unwrap_or_default();
                let fallback = target.to_string();
                // Attach to the resolver route of that map (made by a later or earlier rule).
                let mut attached = false;
                for r in self.out.routes.iter_mut().filter(|r| r.vhost == vhost) {
                    if let Target::Resolve { map: m, .. } = &r.target {
                        if *m == map {
                            r.fallback = Some(fallback.clone());
                            r.comments.extend(
                                text.iter().map(|t| format!("  {t}: the map's NULL answer")),
                            );
                            attached = true;
                        }
                    }
                }
                if !attached {
                    self.pending_fallbacks.push((vhost, map, fallback, text));
                }
                return None;
            }
            if let Some(route) = self.fall_through_fallback(vhost, conds, pattern, target) {
                let r = &mut self.out.routes[route];
                let quirk = r.null_guard == Some(true);
                r.fallback = Some(target.to_string());
                r.comments.extend(text.iter().map(|t| {
                    format!("  {t}: after the lookups, for the same hosts: the map's no-answer")
                }));
                if quirk {
                    r.comments.push("  In Apache a prg: map's NULL answer is an empty string, so `!^NULL$` was always true and this redirect never fired (Apache answered 400 for an unknown desktop); deskgate redirects, as the rules meant.".into());
                    self.out.notes.push(format!("{}: the redirect for an unknown desktop ({target}) never fired in Apache (a prg: map's NULL is an empty string, so `!^NULL$` was always true; Apache answered 400); deskgate redirects as the rules meant", d.at));
                }
                return None;
            }
            let to_https = target.starts_with("https://%{HTTP_HOST}")
                || target.starts_with("https://%{SERVER_NAME}");
            let only_https_conds = conds.iter().all(|c| {
                c.arg(0).eq_ignore_ascii_case("%{HTTPS}")
                    || c.arg(0).eq_ignore_ascii_case("%{SERVER_PORT}")
                    || c.arg(0).eq_ignore_ascii_case("%{REQUEST_SCHEME}")
            });
            if to_https
                && !tls
                && only_https_conds
                && matches!(
                    pattern,
                    "^" | "^/?(.*)$" | "^/(.*)$" | "^(.*)$" | ".*" | "(.*)" | "^.*$" | "/(.*)"
                )
            {
                return Some((text.join("; "), None));
            }
            // `^(.*) https://hub.example:8443$1`: every path to one fixed origin.
            let fixed = target
                .strip_suffix("$1")
                .or(target.strip_suffix("%{REQUEST_URI}"))
                .filter(|o| o.starts_with("https://") && !o.contains(['%', '$', '@']))
                .map(|o| o.trim_end_matches('/'))
                .filter(|o| !o["https://".len()..].contains('/'));
            let keeps_path = if target.ends_with("%{REQUEST_URI}") {
                matches!(
                    pattern,
                    "^" | ".*" | "^.*$" | "^(.*)$" | "(.*)" | "^/?(.*)$" | "^/(.*)$"
                )
            } else {
                matches!(pattern, "^(.*)$" | "^(.*)" | "(.*)")
            };
            if let (Some(origin), true, true, false) = (fixed, keeps_path, only_https_conds, tls) {
                return Some((text.join("; "), Some(origin.to_string())));
            }
            self.skip(&d.at, &d.text, "a redirect deskgate has no rule for (it redirects plain HTTP to HTTPS, and a resolver's no-answer)");
            return None;
        }
        if !flags.proxy {
            self.skip(
                &d.at,
                &d.text,
                "an internal rewrite (no [P]): deskgate does not rewrite paths",
            );
            return None;
        }
        // Conditions the routes below carry: the host, the Upgrade (deskgate passes upgrades on
        // every route) and the lookup's answer. Any other narrows the rule in a way deskgate
        // cannot express: refused rather than widened.
        if let Some(c) = conds
            .iter()
            .find(|c| !is_host(c) && !is_upgrade(c) && !is_answer_guard(c.arg(0), c.arg(1)))
        {
            self.skip(
                &d.at,
                &d.text,
                &format!("under `{}`, a condition deskgate cannot express", c.text),
            );
            return None;
        }
        let whole_path = matches!(
            pattern,
            "^/(.*)$" | "^/?(.*)$" | "^/(.*)" | "^(.*)$" | "^/?(.*)" | "/(.*)" | "/(.*)$"
        );
        if let Some(map) = map_name(target) {
            // `https://${container:%1}/$1`: a resolver route.
            let Some((spec, _)) = scope.maps.get(&map) else {
                self.skip(
                    &d.at,
                    &d.text,
                    &format!("RewriteMap {map} is not defined in this vhost"),
                );
                return None;
            };
            if !spec.starts_with("prg:") && !spec.starts_with("txt:") && !spec.starts_with("dbm:") {
                self.skip(&d.at, &d.text, &format!("RewriteMap {map} is {spec}: only lookup maps (prg:, txt:, dbm:) become resolver routes"));
                return None;
            }
            let host = match host_cond {
                Some(c) => host_template(c.arg(1)),
                None => scope
                    .names
                    .iter()
                    .find_map(|n| host_pattern(n).filter(|h| h.contains("{name}"))),
            };
            let Some(host) = host else {
                self.skip(&d.at, &d.text, "the map key is not a host deskgate can capture as `{name}` (a RewriteCond on %{HTTP_HOST} with one group, or a ServerAlias like desktop-*.hub.example.org)");
                return None;
            };
            if !whole_path {
                self.skip(
                    &d.at,
                    &d.text,
                    "the rule proxies part of the path; resolver routes carry the whole path",
                );
                return None;
            }
            let dotted = host_cond.is_some_and(|c| group_spans_dots(c.arg(1)));
            let scheme = target.split("://").next().unwrap_or("");
            let null_guard =
                answer_guard.map(|g| !g.arg(0).contains('|') && g.arg(1).contains("NULL"));
            // The `%{HTTP:Upgrade}` + `wss://` twin of the same lookup: one route carries both.
            let twin = self.out.routes.iter_mut().find(|r| {
                r.vhost == vhost
                    && r.host.as_deref() == Some(&host)
                    && matches!(&r.target, Target::Resolve { map: m, .. } if *m == map)
            });
            if let Some(r) = twin {
                r.comments.extend(text.iter().map(|t| format!("  {t}")));
                if upgrade_cond {
                    r.comments.push("  the Upgrade condition: deskgate passes WebSocket upgrades natively on this route".into());
                }
                r.null_guard = r.null_guard.or(null_guard);
                return None;
            }
            let url = match &self.opts.resolver_url {
                Some(u) => u.clone(),
                None => {
                    self.skip(&d.at, &d.text, &format!("RewriteMap {map} runs a program the importer cannot run: pass --resolver-url (the hub URL answering {{\"target\": \"ip:port\"}} for {{name}}); a placeholder is written"));
                    "http://REPLACE-WITH-HUB-API/container-target/{name}".to_string()
                }
            };
            let mut comments = text.clone();
            comments.push(format!(
                "  RewriteMap {map} {spec}: asked of the hub per desktop name instead"
            ));
            if upgrade_cond {
                comments.push("  the Upgrade condition: deskgate passes WebSocket upgrades natively on this route".into());
            }
            if dotted {
                comments.push("  the host condition's group also matches names with dots (a.b); deskgate's {name} is one label, so such hosts are not routed here".into());
            }
            let tls_verify = matches!(scheme, "https" | "wss").then_some(!scope.proxy_verify_off);
            let mut route = Route {
                comments,
                host: Some(host),
                path: "/".into(),
                target: Target::Resolve {
                    url,
                    tls_verify,
                    basic_auth: None,
                    map: map.clone(),
                },
                strip_prefix: false,
                fallback: None,
                vhost,
                null_guard,
                rewrite_location: Vec::new(),
                cookie_domain: Vec::new(),
                cookie_path: Vec::new(),
            };
            if let Some(i) = self
                .pending_fallbacks
                .iter()
                .position(|(v, m, _, _)| *v == vhost && *m == map)
            {
                let (_, _, f, t) = self.pending_fallbacks.remove(i);
                route.fallback = Some(f);
                route
                    .comments
                    .extend(t.iter().map(|t| format!("  {t}: the map's NULL answer")));
            }
            self.proxy_rules += 1;
            self.out.routes.push(route);
            return None;
        }
        // A fixed target: `^/prefix/(.*)$ http://h:p/$1`, or `/(.*)` (unanchored: every path
        // starts with `/`, so it is `^/(.*)`).
        let prefix = match pattern {
            "/(.*)" | "/(.*)$" => Some("/".to_string()),
            _ => pattern
                .strip_prefix('^')
                .and_then(|p| p.strip_suffix("(.*)$").or(p.strip_suffix("(.*)")))
                .map(|p| p.trim_end_matches('?').to_string()),
        };
        let base = target.strip_suffix("$1").and_then(Url::parse);
        match (prefix, base, host_cond) {
            (Some(_), Some(_), None) if guarded => self.skip(&d.at, &d.text, "under a `RewriteRule - [S=N]` host guard without a host of its own: deskgate would serve it on every host"),
            (Some(prefix), Some(url), None) if literal(&prefix) => {
                let mut comments = text.clone();
                if upgrade_cond {
                    comments.push("  the Upgrade condition: deskgate passes WebSocket upgrades natively".into());
                }
                self.prefix_routes(vhost, scope, hosts, d, &prefix, &url, comments);
            }
            _ => match regex_as_prefix_map(pattern, target) {
                Some((public, url)) if host_cond.is_none() => self.maybe_covered(vhost, &public, &url, d, "a [P] rule of a shape the importer does not know (it knows `^/prefix/(.*)$ URL/$1` and RewriteMap lookups by host)"),
                _ => self.skip(&d.at, &d.text, "a [P] rule of a shape the importer does not know (it knows `^/prefix/(.*)$ URL/$1` and RewriteMap lookups by host)"),
            },
        }
        None
    }

    /// The production shape's last rule: `[P]` lookups guarded by `${map:...} !^NULL$`, then
    /// `RewriteCond %{HTTP_HOST} ...; RewriteRule ^ https://hub/ [R=302,L]` for the same hosts:
    /// what is left for those hosts is an unknown desktop. The resolver route it falls back from.
    fn fall_through_fallback(
        &self,
        vhost: usize,
        conds: &[&Directive],
        pattern: &str,
        target: &str,
    ) -> Option<usize> {
        let fixed = !target.contains(['%', '$']) && target.contains("://");
        let every_path = matches!(
            pattern,
            "^" | "^/?(.*)$" | "^/(.*)$" | "^(.*)$" | ".*" | "(.*)" | "^.*$" | "/(.*)" | "^/" | "/"
        );
        let [host] = conds else { return None };
        if !fixed || !every_path || !host.arg(0).eq_ignore_ascii_case("%{HTTP_HOST}") {
            return None;
        }
        let regex = host.arg(1);
        if regex.starts_with('!') {
            return None;
        }
        let template = host_template(regex);
        self.out.routes.iter().position(|r| {
            r.vhost == vhost
                && r.null_guard.is_some()
                && r.fallback.is_none()
                && r.host
                    .as_ref()
                    .is_some_and(|h| template.as_ref() == Some(h) || regex_covers(regex, h))
        })
    }

    /// `RequestHeader set Authorization "Basic ..."`, possibly under `<If %{HTTP_HOST} =~>`:
    /// Basic auth on the upstreams (or resolvers) of the routes it covers.
    fn apply_scoped_auth(&mut self) {
        let scopes: Vec<Vec<ScopedAuth>> = self.scoped_auth.drain(..).collect();
        for (vhost, auths) in scopes.into_iter().enumerate() {
            for (regex, auth, at, note) in auths {
                let covers = |host: &Option<String>| match (&regex, host) {
                    (None, _) => true,
                    (Some(r), Some(h)) => regex_covers(r, h),
                    (Some(_), None) => false,
                };
                let mut used = false;
                let mut names = Vec::new();
                for r in self
                    .out
                    .routes
                    .iter_mut()
                    .filter(|r| r.vhost == vhost && covers(&r.host))
                {
                    match &mut r.target {
                        Target::Resolve { basic_auth, .. } => {
                            *basic_auth = Some(auth.clone());
                            r.comments.push(format!("  {at}: RequestHeader set Authorization \"Basic ...\": basic_auth (the password moved out of the YAML){note}"));
                            used = true;
                        }
                        Target::Named(n) => names.push(n.clone()),
                    }
                }
                for n in names {
                    let shared = self.out.routes.iter().any(|r| {
                        matches!(&r.target, Target::Named(x) if *x == n)
                            && !(r.vhost == vhost && covers(&r.host))
                    });
                    if shared {
                        self.out.skipped.push(format!("{at}: RequestHeader set Authorization: upstream {n} also serves routes this header does not cover; not translated"));
                        continue;
                    }
                    if let Some(u) = self.out.upstreams.get_mut(&n) {
                        u.basic_auth = Some(auth.clone());
                        u.comments.push(format!("  {at}: RequestHeader set Authorization \"Basic ...\": basic_auth (the password moved out of the YAML){note}"));
                        used = true;
                    }
                }
                if !used {
                    self.out.skipped.push(format!("{at}: RequestHeader set Authorization: no translated route is covered by it"));
                }
            }
        }
    }

    /// A plain listener whose vhosts all redirect: to one fixed origin (`redirect_to`), or
    /// each to its own names or the client's host (`redirect_https`); anything else is a gap.
    fn listener_redirects(&mut self) {
        for l in &mut self.out.listeners {
            if !l.redirect_https || l.proxies || !l.certs.is_empty() {
                continue;
            }
            let fixed: Vec<&String> = l
                .redirect_targets
                .iter()
                .filter_map(|(t, _)| t.as_ref())
                .collect();
            let all_fixed_same =
                fixed.len() == l.redirect_targets.len() && fixed.windows(2).all(|w| w[0] == w[1]);
            if all_fixed_same {
                l.redirect_to = fixed.first().map(|o| o.to_string());
                continue;
            }
            // Mixed: `redirect_https` is exact when each fixed target is its vhost's own name.
            let own_names = l.redirect_targets.iter().all(|(t, names)| {
                t.as_ref().is_none_or(|o| {
                    let host = o.trim_start_matches("https://");
                    names.iter().any(|n| n == host)
                })
            });
            if !own_names {
                l.redirect_https = false;
                self.out.skipped.push(format!(
                    "{}: the vhosts on this address redirect to different fixed hosts; deskgate's listener redirects to one (redirect_to) or to the request's host (redirect_https)",
                    l.addr
                ));
            }
        }
    }

    /// deskgate's routes apply to every listener; Apache's to their vhost's address only. A
    /// vhost whose routes would also answer on another proxying address is a gap (a `:8448`
    /// federation vhost next to a `:443` one: each would serve the other's paths).
    fn routes_across_listeners(&mut self) {
        use std::collections::BTreeSet;
        type RouteKey = (Option<String>, String, String);
        let mut keys: Vec<(usize, RouteKey)> = self
            .route_keys
            .iter()
            .map(|(v, h, p, u)| (*v, (h.clone(), p.clone(), u.clone())))
            .collect();
        for r in &self.out.routes {
            if let Target::Resolve { map, .. } = &r.target {
                keys.push((
                    r.vhost,
                    (r.host.clone(), r.path.clone(), format!("resolve {map}")),
                ));
            }
        }
        let on = |vhost: usize, addr: &String| {
            self.vhost_addrs
                .get(vhost)
                .is_some_and(|(a, _, _)| a.contains(addr))
        };
        // Per listener that serves routes (not a redirect-only one): what its own vhosts asked for.
        let per_listener: Vec<(String, BTreeSet<RouteKey>)> = self
            .out
            .listeners
            .iter()
            .filter(|l| !(l.redirect_https && !l.proxies && l.certs.is_empty()))
            .map(|l| {
                let routes = keys
                    .iter()
                    .filter(|(v, _)| on(*v, &l.addr))
                    .map(|(_, k)| k.clone())
                    .collect();
                (l.addr.clone(), routes)
            })
            .collect();
        let mut reported = BTreeSet::new();
        for (vhost, key) in &keys {
            let Some((addrs, at, args)) = self.vhost_addrs.get(*vhost) else {
                continue;
            };
            let elsewhere: Vec<&str> = per_listener
                .iter()
                .filter(|(a, routes)| !addrs.contains(a) && !routes.contains(key))
                .map(|(a, _)| a.as_str())
                .collect();
            if !elsewhere.is_empty() && reported.insert(*vhost) {
                self.out.skipped.push(format!(
                    "{at}: <VirtualHost {args}>: its routes are also served on {} (deskgate's routes apply to every listener; Apache served them on this address only)",
                    elsewhere.join(", ")
                ));
            }
        }
    }

    /// `timeout=` on some ProxyPass lines only: Apache's other rules waited `ProxyTimeout` (or
    /// `Timeout`, 60 s by default) on a quiet WebSocket; deskgate has one `upgraded_idle`, which
    /// must not cut those earlier than Apache did.
    fn idle_floor(&mut self) {
        if self.timed_rules == 0 || self.timed_rules >= self.proxy_rules {
            return;
        }
        let floor = self
            .out
            .timeouts
            .get(&Timeout::Read)
            .map_or(60, |(s, _)| *s);
        if let Some((secs, why)) = self.out.timeouts.get_mut(&Timeout::UpgradedIdle) {
            if *secs < floor {
                why.push(format!("  raised to {floor}s: the proxy rules without timeout= waited that long in Apache (ProxyTimeout/Timeout, default 60s); deskgate has one idle limit for all"));
                *secs = floor;
            }
        }
    }

    /// The header comments, the config, and the comments above its items, in document order.
    fn document(&self) -> Result<(Vec<String>, RawConfig, Vec<Anchor>), serde_yaml::Error> {
        let o = &self.out;
        let mut header = o.header.clone();
        if !o.ignored.is_empty() {
            header.push(String::new());
            header.push("Not translated, no routing or security effect:".into());
            for (name, at) in &o.ignored {
                header.push(format!("  {name}: {}", at.join(", ")));
            }
        }
        if !o.notes.is_empty() {
            header.push(String::new());
            header.push("deskgate answers differently from Apache here, on purpose:".into());
            header.extend(o.notes.iter().map(|n| format!("  {n}")));
        }
        if !o.skipped.is_empty() {
            header.push(String::new());
            header.push(
                "NOT TRANSLATED, changes routing or security (review before switching):".into(),
            );
            header.extend(o.skipped.iter().map(|s| format!("  {s}")));
        }
        let mut anchors = Vec::new();
        let mut config = RawConfig::default();
        for l in &o.listeners {
            let listener = l.raw();
            anchors.push(Anchor::item(&listener, l.comments.clone())?);
            let certs = listener.tls.iter().flat_map(|t| &t.certs);
            for (c, raw) in l.certs.iter().zip(certs) {
                anchors.push(Anchor::item(raw, c.comments.clone())?);
            }
            config.listeners.push(listener);
        }
        for (name, u) in &o.upstreams {
            let upstream = RawUpstream {
                servers: vec![u.server.clone()],
                tls: u.tls.map(verify),
                basic_auth: u.basic_auth.clone(),
                retries: 0,
                balance: None,
                hash_key: None,
                health: None,
            };
            anchors.push(Anchor::entry(name, &upstream, u.comments.clone())?);
            config.upstreams.insert(name.clone(), upstream);
        }
        for r in &o.routes {
            let route = r.raw(&self.resolver_headers);
            anchors.push(Anchor::item(&route, r.comments.clone())?);
            config.routes.push(route);
        }
        for (key, (secs, why)) in &o.timeouts {
            let t = Some(HumanDuration(std::time::Duration::from_secs(*secs)));
            let mut this_one = RawTimeouts::default();
            *key.slot(&mut this_one) = t;
            anchors.push(Anchor::fields(&this_one, why.clone())?);
            *key.slot(&mut config.timeouts) = t;
        }
        if !o.headers.is_empty() || !o.removed_headers.is_empty() {
            let mut headers = RawProxyHeaders {
                x_forwarded: None,
                add: BTreeMap::new(),
                remove: Vec::new(),
            };
            for (k, (v, why)) in &o.headers {
                anchors.push(Anchor::entry(k, v, why.clone())?);
                headers.add.insert(k.clone(), v.clone());
            }
            headers.remove = o.removed_headers.keys().cloned().collect();
            if !headers.remove.is_empty() {
                let why = "removed from every proxied request (Apache removed them per vhost)";
                let only_remove = RawProxyHeaders {
                    x_forwarded: None,
                    add: BTreeMap::new(),
                    remove: headers.remove.clone(),
                };
                anchors.push(Anchor::fields(&only_remove, vec![why.into()])?);
            }
            for (k, why) in &o.removed_headers {
                anchors.push(Anchor::item(k, why.clone())?);
            }
            config.proxy_headers = Some(headers);
        }
        Ok((header, config, anchors))
    }

    fn finish(mut self) -> Result<Conversion, ImportError> {
        for (_, map, _, text) in std::mem::take(&mut self.pending_fallbacks) {
            self.out.skipped.push(format!(
                "{}: a NULL redirect for RewriteMap {map}, which no [P] rule uses",
                text.first().cloned().unwrap_or_default()
            ));
        }
        // Host-less routes (the default vhost's) after every named host's: in deskgate a route
        // naming the host wins anyway; in the file the order then reads as Apache chose.
        self.out.routes.sort_by_key(|r| r.host.is_none());
        self.listener_redirects();
        self.routes_across_listeners();
        self.idle_floor();
        let (header, doc, anchors) = self.document()?;
        let yaml = yaml_out::write(&doc, &header, &anchors)?;
        Ok(Conversion {
            yaml,
            skipped: self.out.skipped,
            ignored: self
                .out
                .ignored
                .into_iter()
                .map(|(k, v)| format!("{k} ({})", v.join(", ")))
                .collect(),
            secret_files: self.out.secret_files,
            notices: self.out.notices,
            notes: self.out.notes,
        })
    }
}

/// Apache's directive names are case-insensitive; compare them in their documented spelling.
fn canonical_name(name: &str) -> String {
    const KNOWN: &[&str] = &[
        "ServerName",
        "ServerAlias",
        "SSLEngine",
        "SSLCertificateFile",
        "SSLCertificateKeyFile",
        "SSLCertificateChainFile",
        "SSLProtocol",
        "SSLCipherSuite",
        "SSLProxyEngine",
        "SSLProxyVerify",
        "SSLProxyCheckPeerCN",
        "SSLProxyCheckPeerName",
        "SSLProxyCheckPeerExpire",
        "ProxyPreserveHost",
        "ProxyTimeout",
        "Timeout",
        "RewriteEngine",
        "RewriteMap",
        "RewriteCond",
        "RewriteRule",
        "RequestHeader",
        "SetEnvIf",
        "SetEnvIfNoCase",
        "ProxyPass",
        "ProxyPassMatch",
        "ProxyPassReverse",
        "ProxyPassReverseCookiePath",
        "ProxyPassReverseCookieDomain",
        "Redirect",
        "RedirectPermanent",
        "AllowEncodedSlashes",
        "SSLOpenSSLConfCmd",
    ];
    KNOWN
        .iter()
        .chain(NO_ROUTING_EFFECT)
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_string(), |k| k.to_string())
}

/// Directives `setting` already handled for the vhost (the second pass skips them).
fn scope_directive(name: &str) -> bool {
    matches!(
        name,
        "ServerName"
            | "ServerAlias"
            | "SSLEngine"
            | "SSLCertificateFile"
            | "SSLCertificateKeyFile"
            | "SSLCertificateChainFile"
            | "SSLProtocol"
            | "SSLCipherSuite"
            | "SSLProxyEngine"
            | "SSLProxyVerify"
            | "SSLProxyCheckPeerCN"
            | "SSLProxyCheckPeerName"
            | "SSLProxyCheckPeerExpire"
            | "ProxyPreserveHost"
            | "ProxyTimeout"
            | "Timeout"
    ) || NO_ROUTING_EFFECT.contains(&name)
}

/// An upstream's name in the YAML: `127_0_0_1_3000` (ws:// and http:// to one server share it).
fn upstream_name(url: &Url) -> String {
    format!(
        "{}_{}",
        url.host
            .replace(['.', ':', '[', ']'], "_")
            .trim_matches('_'),
        url.port
    )
}

/// `RequestHeader set X-Forwarded-For|Proto|Host|Port ...`: what deskgate sets itself.
fn is_forwarded_set(d: &Directive) -> bool {
    let h = d.arg(1).to_ascii_lowercase();
    d.arg(0).eq_ignore_ascii_case("set")
        && matches!(
            h.as_str(),
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-port"
        )
}

/// A regex proxy rule that maps a path prefix: `^/(api/websocket)$ ws://h/$1`,
/// `/cool/(.*)/ws$ wss://h/cool/$1/ws`. The pattern's literal start maps to the target path's
/// literal start, and what follows is the same on both sides once each group is `$n`.
/// Returns the public prefix and the target URL with the backend prefix as its path.
fn regex_as_prefix_map(pattern: &str, target: &str) -> Option<(String, Url)> {
    let p = pattern.strip_prefix('^').unwrap_or(pattern);
    if !p.starts_with('/') {
        return None;
    }
    let lit_end = p
        .find(['(', '.', '[', '*', '+', '?', '$', '\\', '|'])
        .unwrap_or(p.len());
    let public = &p[..lit_end];
    let mut rest = p[lit_end..].trim_end_matches('$').to_string();
    let mut n = 0;
    while let Some(open) = rest.find('(') {
        let close = open + rest[open..].find(')')?;
        n += 1;
        rest.replace_range(open..=close, &format!("${n}"));
    }
    let (scheme_host, tpath) = {
        let after = target.find("://")? + 3;
        let slash = after + target[after..].find('/')?;
        (&target[..slash], &target[slash..])
    };
    let tlit_end = tpath.find('$').unwrap_or(tpath.len());
    let (backend, trest) = (&tpath[..tlit_end], &tpath[tlit_end..]);
    if rest != trest {
        return None;
    }
    // What is left of the pattern must be only groups and literal text, copied as is.
    if rest
        .replace(|c: char| c == '$' || c.is_ascii_digit(), "")
        .contains(['[', '*', '+', '?', '\\', '|', '(', ')'])
    {
        return None;
    }
    let url = Url::parse(&format!("{scheme_host}{backend}"))?;
    Some((public.to_string(), url))
}

/// Who may get in: `AuthType`, `Auth*`, `Require` (other than `all granted`), `Deny`,
/// mod_auth_mellon/-openidc settings, `Use Auth...` macros.
fn is_authentication(d: &Directive) -> bool {
    let n = d.name.to_ascii_lowercase();
    (n.starts_with("auth") && n != "authorizationheader")
        || n.starts_with("mellon")
        || n.starts_with("oidc")
        || (n == "require" && !is_access_grant(d))
        || n == "deny"
        || (n == "use" && {
            let m = d.arg(0).to_ascii_lowercase();
            m.contains("auth") || m.starts_with("require")
        })
        || (n == "sslverifyclient" && !d.arg(0).eq_ignore_ascii_case("none"))
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// `<Location /x>` with `RewriteEngine On`, Upgrade/Connection conditions and a `[P]` rule
/// to a ws:// URL: the old WebSocket workaround for the Location's own ProxyPass.
fn location_upgrade_workaround(children: &[Node]) -> bool {
    let directives: Vec<&Directive> = children
        .iter()
        .filter_map(|c| match c {
            Node::Directive(d) => Some(d),
            _ => None,
        })
        .collect();
    let rules: Vec<&&Directive> = directives.iter().filter(|d| d.is("RewriteRule")).collect();
    let conds_ok = directives.iter().filter(|d| d.is("RewriteCond")).all(|d| {
        let t = d.arg(0).to_ascii_lowercase();
        t == "%{http:upgrade}" || t == "%{http:connection}"
    });
    let has_conds = directives.iter().any(|d| d.is("RewriteCond"));
    !rules.is_empty()
        && has_conds
        && conds_ok
        && rules.iter().all(|r| {
            let t = r.arg(1).to_ascii_lowercase();
            (t.starts_with("ws://") || t.starts_with("wss://")) && Flags::parse(r.arg(2)).proxy
        })
}

/// `Redirect [permanent] "https://%{HTTP_HOST}%{REQUEST_URI}"` inside `<Location "/">`:
/// `Some(None)` for the request's own host, `Some(Some(origin))` for a fixed one.
fn location_redirect(d: &Directive) -> Option<Option<String>> {
    let (first, url) = redirect_args(d);
    let url = if url.is_empty() { first } else { return None };
    let origin = url.strip_suffix("%{REQUEST_URI}")?;
    match origin.strip_prefix("https://")? {
        "%{HTTP_HOST}" | "%{SERVER_NAME}" => Some(None),
        h if !h.is_empty() && !h.contains(['%', '$', '@', '/']) => Some(Some(origin.to_string())),
        _ => None,
    }
}

/// `Require all granted`, `Order allow,deny`, `Allow from all`: access for everyone.
fn is_access_grant(d: &Directive) -> bool {
    let args = d.args.join(" ").to_ascii_lowercase();
    (d.is("Require") && args == "all granted")
        || (d.is("Order") && args.replace(' ', "") == "allow,deny")
        || (d.is("Order") && args.replace(' ', "") == "deny,allow")
        || (d.is("Allow") && args == "from all")
}

/// `<Proxy *>` (or `<Proxy "*">`) with nothing but grants to everyone.
fn grants_all(s: &Section) -> bool {
    matches!(
        s.args.trim().trim_matches('"'),
        "*" | "http://*" | "https://*"
    ) && s.children.iter().all(|c| match c {
        Node::Directive(d) => is_access_grant(d),
        Node::Section(_) => false,
    })
}

fn mentions_upgrade(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("upgrade") || t.contains("connection")
}

fn with_slash(p: &str) -> String {
    if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

/// A path prefix without regex syntax.
fn literal(p: &str) -> bool {
    !p.contains([
        '(', ')', '[', ']', '*', '+', '?', '|', '\\', '{', '}', '^', '$',
    ]) && !p.contains(".*")
}

struct Url {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

impl Url {
    fn parse(s: &str) -> Option<Url> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains(['$', '%', '{', '@']) {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
                Ok(p) => (h.to_string(), p),
                Err(_) => (authority.to_string(), default),
            },
            _ => (authority.to_string(), default),
        };
        Some(Url {
            scheme,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// A ServerName/ServerAlias as a deskgate route host: exact, `*.suffix`, or one `*` inside the
/// first label as a `{name}` capture (`desktop-*.hub.example.org`).
fn host_pattern(name: &str) -> Option<String> {
    let stars = name.matches('*').count();
    if stars == 0 {
        return Some(name.to_string());
    }
    if stars > 1 || name.contains('?') {
        return None;
    }
    if name.starts_with("*.") {
        return Some(name.to_string());
    }
    let (first, rest) = name.split_once('.')?;
    first
        .contains('*')
        .then(|| format!("{}.{rest}", first.replace('*', "{name}")))
}

/// Certificate `hosts:` take exact names and `*.suffix` only.
fn cert_host(name: &str) -> bool {
    !name.contains('*') || (name.starts_with("*.") && name.matches('*').count() == 1)
}

/// `^desktop-([a-z0-9_-]+)\.hub\.example\.org$` -> `desktop-{name}.hub.example.org`.
fn host_template(regex: &str) -> Option<String> {
    let r = regex
        .strip_prefix('^')
        .unwrap_or(regex)
        .strip_suffix('$')
        .unwrap_or(regex.trim_start_matches('^'));
    let open = r.find('(')?;
    let close = open + r[open..].find(')')?;
    let (before, after) = (&r[..open], &r[close + 1..]);
    if r[close + 1..].contains('(') {
        return None;
    }
    let unescape = |s: &str| -> Option<String> {
        let t = s.replace("\\.", ".");
        literal(&t.replace('.', "")).then_some(t)
    };
    Some(format!("{}{{name}}{}", unescape(before)?, unescape(after)?))
}

/// Under which condition a `RequestHeader` in an `<If>` applies.
enum HeaderCond {
    /// Every request of the vhost.
    Always,
    /// Hosts matching this regex (`%{HTTP_HOST} =~ /re/`, or `== 'name'` as `^name$`).
    Host(String),
    /// A condition deskgate cannot express, and why.
    Refused(String),
}

/// `"%{HTTP_HOST} =~ /^desktop-/"` -> `Host("^desktop-")`; `== 'a.example'` -> `Host("^a\.example$")`;
/// anything else (`!=`, `!~`, `&&`, `||`, env, lookarounds, other variables) is refused.
fn header_cond_of_if(args: &str) -> HeaderCond {
    let a = args.trim().trim_matches('"').trim();
    let refused = |why: &str| HeaderCond::Refused(format!("<If {a}>: {why}"));
    if a.contains("&&") || a.contains("||") || a.starts_with('!') {
        return refused("a combined or negated condition");
    }
    let Some(rest) = a
        .strip_prefix("%{HTTP_HOST}")
        .or_else(|| a.strip_prefix("%{SERVER_NAME}"))
        .or_else(|| a.strip_prefix("req('Host')"))
        .map(str::trim_start)
    else {
        return refused("a condition on something other than the host");
    };
    if let Some(re) = rest.strip_prefix("=~").map(str::trim) {
        let Some(inner) = re.strip_prefix('/').or_else(|| re.strip_prefix("m#")) else {
            return refused("a regex deskgate cannot read");
        };
        let Some(end) = inner.rfind(['/', '#']) else {
            return refused("a regex deskgate cannot read");
        };
        let (re, flags) = (&inner[..end], &inner[end + 1..]);
        if re.contains("(?") || !flags.trim().is_empty() {
            return refused("lookarounds or regex flags");
        }
        return HeaderCond::Host(re.to_string());
    }
    if let Some(lit) = rest.strip_prefix("==").map(str::trim) {
        let lit = lit.trim_matches(['\'', '"']);
        if lit.is_empty() || lit.contains(['%', '$', '*', ' ']) {
            return refused("a comparison with something other than one host name");
        }
        return HeaderCond::Host(format!(
            "^{}$",
            lit.to_ascii_lowercase().replace('.', "\\.")
        ));
    }
    refused("an operator other than =~ or ==")
}

/// Whether every host the route host template stands for matches the regex. The regex must
/// read `^LITERAL`, `^LITERAL$`, or `^LITERAL.*LITERAL$` (`.*`/`.+`, in a group or not; either
/// anchor may be missing): a literal start (and end) the template's own literal start (and end)
/// carry. Anything narrower (`[a-z]+`, alternatives...) is not covered: Basic auth is never
/// injected for hosts Apache would not have sent it to.
fn regex_covers(regex: &str, host: &str) -> bool {
    let anchored = regex.starts_with('^');
    let r = regex.strip_prefix('^').unwrap_or(regex);
    let (r, ends) = match r.strip_suffix('$') {
        Some(r) if !r.ends_with('\\') => (r, true),
        _ => (r, false),
    };
    // Split at the one wildcard, if any.
    let (first, second) = match ["(.*)", "(.+)", ".*", ".+"]
        .iter()
        .find_map(|w| r.find(w).map(|i| (i, w.len())))
    {
        Some((i, len)) => (&r[..i], Some(&r[i + len..])),
        None => (r, None),
    };
    let unescape = |s: &str| -> Option<String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) if !n.is_ascii_alphanumeric() => out.push(n),
                    _ => return None,
                },
                '(' | ')' | '[' | ']' | '.' | '*' | '+' | '?' | '$' | '^' | '|' | '{' | '}' => {
                    return None
                }
                c => out.push(c.to_ascii_lowercase()),
            }
        }
        Some(out)
    };
    let Some(first) = unescape(first) else {
        return false;
    };
    let second = match second.map(unescape) {
        Some(None) => return false,
        Some(Some(s)) => Some(s),
        None => None,
    };
    let head = host.split(['{', '*']).next().unwrap_or("");
    let tail = host.rsplit(['}', '*']).next().unwrap_or("");
    let templated = head.len() < host.len();
    let start_ok = if anchored {
        head.starts_with(&first)
    } else {
        head.contains(&first)
    };
    match second {
        // `^exact$`: only that very host.
        None if ends => anchored && !templated && host == first,
        None => start_ok,
        Some(end) => {
            let end_ok = if ends {
                tail.ends_with(&end)
            } else {
                tail.contains(&end)
            };
            // Without a wildcard in the host, the literal parts must not overlap.
            let fits = templated || host.len() >= first.len() + end.len();
            start_ok && end_ok && fits
        }
    }
}

/// A RewriteCond that is true when a map has no answer: `${m:k} ^$`, `${m:k} =""`, or with a
/// default, `${m:k|NULL} ^NULL$`.
fn is_no_answer(test: &str, pattern: &str) -> bool {
    if !test.starts_with("${") {
        return false;
    }
    let default = test.trim_end_matches('}').split_once('|').map(|(_, d)| d);
    match default {
        Some(d) => pattern == format!("^{d}$") || pattern == format!("={d}"),
        None => matches!(pattern, "^$" | "=\"\"" | "=''"),
    }
}

/// A RewriteCond that is true when a map answered: `${m:k} !^NULL$` (always true without a
/// `|NULL` default: see `never` in `rewrite_rule`), `!^$`, `!=""`, `.+`.
fn is_answer_guard(test: &str, pattern: &str) -> bool {
    test.starts_with("${")
        && matches!(
            pattern,
            "!^NULL$" | "!=NULL" | "!^$" | "!=\"\"" | "!=''" | ".+" | "^.+$" | "."
        )
}

/// Whether the host regex's group can match a dot (`(.+)`, `(.*)`), where `{name}` is one label.
fn group_spans_dots(regex: &str) -> bool {
    let Some(open) = regex.find('(') else {
        return false;
    };
    let group = &regex[open..regex[open..]
        .find(')')
        .map_or(regex.len(), |c| open + c + 1)];
    let excluded = group.contains("[^.") || group.contains("[^\\.");
    !excluded
        && (group.contains(".+")
            || group.contains(".*")
            || group.contains("\\S")
            || (group.contains('[') && group.contains("\\.")))
}

/// `${container:%1}` -> `container`.
fn map_name(text: &str) -> Option<String> {
    let i = text.find("${")?;
    let rest = &text[i + 2..];
    let colon = rest.find(':')?;
    Some(rest[..colon].to_string())
}

fn redirect_args(d: &Directive) -> (String, String) {
    let args: Vec<&String> = d
        .args
        .iter()
        .filter(|a| {
            !matches!(
                a.to_ascii_lowercase().as_str(),
                "permanent" | "temp" | "seeother" | "301" | "302" | "303" | "307" | "308"
            )
        })
        .collect();
    (
        args.first().map_or(String::new(), |s| s.to_string()),
        args.get(1).map_or(String::new(), |s| s.to_string()),
    )
}

fn names_note(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

/// `/etc/letsencrypt/live/NAME/...` -> NAME.
fn letsencrypt_name(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/etc/letsencrypt/live/")?;
    Some(rest.split('/').next()?.to_string())
}

/// `X-API-Key: env:HUB_API_KEY` -> `X-API-Key` read from `{ env: HUB_API_KEY }`. Anything else is
/// refused, naming the header but never echoing its value (it may be the key itself).
fn header_ref(spec: &str) -> Result<(String, RawSecretRef), ImportError> {
    let Some((name, source)) = spec.split_once(':') else {
        let name = spec.split(['=', ' ']).next().unwrap_or("").to_string();
        return Err(ImportError::HeaderWithoutName { name });
    };
    let name = name.trim();
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b));
    if !valid_name {
        let name = name.split(['=', ' ']).next().unwrap_or("").to_string();
        return Err(ImportError::HeaderName { name });
    }
    let source = source.trim();
    match source.split_once(':') {
        Some((kind @ ("env" | "file"), value)) if !value.trim().is_empty() => {
            let value = value.trim().to_string();
            let source = match kind {
                "env" => RawSecretRef {
                    env: Some(value),
                    file: None,
                },
                _ => RawSecretRef {
                    env: None,
                    file: Some(value.into()),
                },
            };
            Ok((name.to_string(), source))
        }
        _ => Err(ImportError::HeaderSource {
            name: name.to_string(),
        }),
    }
}

/// The `--resolver-url`: an http(s) URL deskgate can call, with `{name}` in it (else every
/// desktop would share one lookup).
fn check_resolver_url(url: &str) -> Result<(), ImportError> {
    let bad = |why: String| {
        Err(ImportError::ResolverUrl {
            url: url.to_string(),
            why,
        })
    };
    if userinfo(url).is_some() {
        return Err(ImportError::ResolverUrlCredentials);
    }
    if let Err(e) = crate::upstream::client::parse_url(&url.replace(['{', '}'], "")) {
        return bad(e.to_string());
    }
    if !url.contains("{name}") {
        return bad("no `{name}` in it: every desktop would share one lookup (e.g. http://127.0.0.1:5020/api/container-target/{name})".into());
    }
    let other = url.replace("{name}", "");
    if other.contains(['{', '}']) {
        return bad("only `{name}` can be filled in".into());
    }
    Ok(())
}

#[derive(Default)]
struct Flags {
    proxy: bool,
    redirect: Option<u16>,
    /// Only `E=` (set a variable) and flow flags: the rule does nothing else.
    env_only: bool,
    /// `S=N`: skip the next N rules.
    skip: Option<usize>,
    /// `S=N` and flow flags only.
    only_skip: bool,
}

impl Flags {
    fn parse(text: &str) -> Flags {
        let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
        let mut f = Flags::default();
        let mut env = false;
        let mut other = false;
        for flag in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let upper = flag.to_ascii_uppercase();
            if upper == "P" || upper == "PROXY" {
                f.proxy = true;
            } else if upper == "R" || upper.starts_with("R=") || upper.starts_with("REDIRECT") {
                f.redirect = Some(
                    upper
                        .split('=')
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(302),
                );
            } else if upper.starts_with("E=") || upper.starts_with("ENV=") {
                env = true;
            } else if let Some(n) = upper
                .strip_prefix("S=")
                .or(upper.strip_prefix("SKIP="))
                .and_then(|n| n.parse().ok())
            {
                f.skip = Some(n);
            } else if !matches!(
                upper.as_str(),
                "L" | "LAST" | "NC" | "NOCASE" | "QSA" | "NE" | "END"
            ) {
                other = true;
            }
        }
        f.env_only = env && !other && !f.proxy && f.redirect.is_none();
        f.only_skip = !env && !other && !f.proxy && f.redirect.is_none();
        f
    }
}

/// `Basic dXNlcjpwYXNz` -> `("user", "pass")`.
fn parse_basic(value: &str) -> Option<(String, String)> {
    let b64 = value
        .trim()
        .strip_prefix("Basic ")
        .or_else(|| value.trim().strip_prefix("basic "))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let creds = String::from_utf8(bytes).ok()?;
    let (user, password) = creds.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests;

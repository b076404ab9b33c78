//! `deskgate import apache`: Apache 2.4 vhosts (as a hub runs them) become deskgate YAML.
//!
//! Each generated block carries a comment naming the Apache `FILE:LINE` it came from; every
//! directive not translated gets a comment saying why. Directives that change routing or
//! security and could not be translated are `skipped` (the command exits non-zero unless
//! `--allow-partial`); those with no routing effect (logging, modules, process settings) are
//! listed once. `deploy/apache-migration.md` is the hand-written reference for the mapping.

use super::apache_conf::{parse_files, Directive, Node, Origin, Section};
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
}

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
];

#[derive(Default)]
struct Listener {
    addr: String,
    comments: Vec<String>,
    redirect_https: bool,
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

#[derive(Clone)]
struct BasicAuth {
    user: String,
    /// `password_file: ...` or `password_env: ...`
    secret: String,
}

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
}

#[derive(Default)]
struct Output {
    header: Vec<String>,
    listeners: Vec<Listener>,
    upstreams: BTreeMap<String, Upstream>,
    routes: Vec<Route>,
    timeouts: BTreeMap<&'static str, (u64, Vec<String>)>,
    headers: BTreeMap<String, (String, Vec<String>)>,
    skipped: Vec<String>,
    ignored: BTreeMap<String, Vec<String>>,
    secret_files: Vec<(PathBuf, String)>,
    notices: Vec<String>,
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
    auth: Vec<(Option<String>, BasicAuth, Origin)>,
    tls_notes: Vec<String>,
}

pub fn convert(files: &[PathBuf], opts: &ImportOptions) -> Result<Conversion, String> {
    let nodes = parse_files(files)?;
    let mut c = Converter {
        out: Output::default(),
        opts,
        secrets: 0,
        pending_fallbacks: Vec::new(),
        scoped_auth: Vec::new(),
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
    for n in &nodes {
        match n {
            Node::Section(s) if s.is("VirtualHost") => vhosts.push(s.clone()),
            Node::Directive(d) if d.is("Listen") => listens.push(d.clone()),
            other => c.setting(&mut global, other, true),
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
            children: nodes.clone(),
            at,
        });
        global = Scope::default();
    }
    let ports_shared = shared_ports(&vhosts);
    for (i, v) in vhosts.iter().enumerate() {
        c.vhost(i, v, &global, &ports_shared);
    }
    c.apply_scoped_auth();
    Ok(c.finish())
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
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => (h, p),
        _ => (a, "80"),
    };
    let host = match host {
        "*" | "_default_" => "0.0.0.0",
        h => h,
    };
    format!("{host}:{port}")
}

struct Converter<'a> {
    out: Output,
    opts: &'a ImportOptions,
    secrets: usize,
    /// `RewriteCond ${map:...} ^NULL$` redirects seen before their map's [P] rule:
    /// (vhost, map, location, origin lines).
    pending_fallbacks: Vec<(usize, String, String, Vec<String>)>,
    /// Each vhost's `RequestHeader set Authorization` (with its `<If>` host regex), applied
    /// once all routes exist.
    scoped_auth: Vec<Vec<(Option<String>, BasicAuth, Origin)>>,
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

    fn timeout(&mut self, key: &'static str, secs: u64, why: String) {
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
            "SSLProxyVerify" if d.arg(0).eq_ignore_ascii_case("none") => scope.proxy_verify_off = true,
            "SSLProxyCheckPeerCN" | "SSLProxyCheckPeerName" | "SSLProxyCheckPeerExpire"
                if d.arg(0).eq_ignore_ascii_case("off") =>
            {
                scope.proxy_verify_off = true
            }
            "ProxyPreserveHost" => scope.preserve_host = Some(d.arg(0).eq_ignore_ascii_case("on")),
            "ProxyTimeout" | "Timeout" => {
                if let Ok(s) = d.arg(0).parse() {
                    self.timeout("read", s, format!("{}: {}", d.at, d.text));
                }
            }
            "RewriteEngine" | "RewriteMap" if top => self.rewrite_setting(scope, d),
            "RequestHeader" => self.request_header(scope, d, None),
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

    fn request_header(&mut self, scope: &mut Scope, d: &Directive, host_regex: Option<&str>) {
        let action = d.arg(0).to_ascii_lowercase();
        let header = d.arg(1).to_string();
        let lower = header.to_ascii_lowercase();
        if lower == "upgrade" || lower == "connection" {
            return self.ignore_workaround(d);
        }
        if lower.starts_with("x-forwarded-") && action == "set" {
            self.out
                .ignored
                .entry(
                    "X-Forwarded-* (deskgate sets X-Forwarded-For, -Proto and -Host itself)".into(),
                )
                .or_default()
                .push(d.at.to_string());
            return;
        }
        if action != "set" {
            return self.skip(&d.at, &d.text, "only `RequestHeader set` is translated (deskgate adds headers; it does not unset, append or edit the browser's)");
        }
        let value = d.arg(2);
        if lower == "authorization" {
            if let Some(creds) = value
                .strip_prefix("Basic ")
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|b| String::from_utf8(b).ok())
            {
                if let Some((user, password)) = creds.split_once(':') {
                    let auth = self.basic_auth(user, password, &d.at);
                    scope
                        .auth
                        .push((host_regex.map(str::to_string), auth, d.at.clone()));
                    return;
                }
            }
            return self.skip(
                &d.at,
                "RequestHeader set Authorization ...",
                "not a Basic credential deskgate can inject",
            );
        }
        if host_regex.is_some() {
            return self.skip(
                &d.at,
                &d.text,
                "a header for some hosts only: deskgate's proxy_headers apply to every request",
            );
        }
        if d.args.len() > 3 {
            return self.skip(
                &d.at,
                &d.text,
                "a conditional header (env=/expr=): not translated",
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
        let secret = match &self.opts.secrets_dir {
            Some(dir) => {
                let path = dir.join(format!("basic-auth-{}", self.secrets));
                self.out
                    .secret_files
                    .push((path.clone(), format!("{password}\n")));
                format!("password_file: {}", q(&path.display().to_string()))
            }
            None => {
                let var = format!("DESKGATE_BASIC_AUTH_{}", self.secrets);
                self.out.notices.push(format!(
                    "set {var} to the password of user `{user}` from {at} (not written anywhere)"
                ));
                format!("password_env: {var}")
            }
        };
        BasicAuth {
            user: user.to_string(),
            secret,
        }
    }

    fn vhost(
        &mut self,
        index: usize,
        v: &Section,
        global: &Scope,
        shared: &BTreeMap<String, Vec<usize>>,
    ) {
        let mut scope = global.clone();
        scope.names.clear();
        // Settings first: in Apache their order within a vhost does not matter.
        for n in &v.children {
            match n {
                Node::Section(s) if s.is("If") => {
                    let regex = host_regex_of_if(&s.args);
                    for c in &s.children {
                        match (c, &regex) {
                            (Node::Directive(d), Some(r)) if d.is("RequestHeader") => {
                                self.request_header(&mut scope, d, Some(r))
                            }
                            (Node::Directive(d), _) => self.skip(&d.at, &d.text, &format!("under <If {}>: only `RequestHeader set` for a host is translated", s.args)),
                            (Node::Section(inner), _) => self.skip(&inner.at, &format!("<{}>", inner.name), "nested in <If>: not translated"),
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
        let mut redirect = None;
        let mut conds: Vec<&Directive> = Vec::new();
        for n in &v.children {
            match n {
                Node::Directive(d) => match canonical_name(&d.name).as_str() {
                    "ProxyPass" => self.proxy_pass(index, &scope, &hosts, d, None),
                    "ProxyPassMatch" => self.proxy_pass_match(index, &scope, &hosts, d),
                    "ProxyPassReverse" => {
                        self.out
                            .ignored
                            .entry("ProxyPassReverse (deskgate does not rewrite Location; the hub and desktops answer with relative or same-host URLs)".into())
                            .or_default()
                            .push(d.at.to_string());
                    }
                    "ProxyPassReverseCookiePath" | "ProxyPassReverseCookieDomain" => self.skip(
                        &d.at,
                        &d.text,
                        "deskgate does not rewrite Set-Cookie paths or domains",
                    ),
                    "Redirect" | "RedirectPermanent" => {
                        let (path, url) = redirect_args(d);
                        // Only `/ https://host[:port]/`: Apache appends the rest of the path, as
                        // redirect_https does; a target with its own path is another redirect.
                        let bare = url
                            .strip_prefix("https://")
                            .is_some_and(|r| r.find('/').is_none_or(|i| &r[i..] == "/"));
                        if path == "/" && bare && !tls {
                            redirect = Some(format!("{}: {}", d.at, d.text));
                        } else {
                            self.skip(&d.at, &d.text, "only `Redirect / https://host/` on a plain-HTTP vhost is translated (as redirect_https)");
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
                    n if scope_directive(n) => {}
                    _ => self.skip(
                        &d.at,
                        &d.text,
                        "not translated (no deskgate equivalent known to the importer)",
                    ),
                },
                Node::Section(s) if s.is("Location") => {
                    for c in &s.children {
                        match c {
                            Node::Directive(d) if d.is("ProxyPass") => {
                                self.proxy_pass(index, &scope, &hosts, d, Some(s.args.trim_matches('"')))
                            }
                            Node::Directive(d) if d.is("ProxyPassReverse") => {}
                            Node::Directive(d) => self.skip(&d.at, &d.text, &format!("in <Location {}>: not translated (access control and per-location settings need deskgate's `auth:`/`block:`)", s.args)),
                            Node::Section(inner) => self.skip(&inner.at, &format!("<{}>", inner.name), "nested in <Location>: not translated"),
                        }
                    }
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
        if let Some(r) = &redirect {
            comments.push(format!("  {r}: redirect_https"));
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
            l.comments.extend(comments.iter().cloned());
            l.proxies |= proxies;
            l.redirect_https &= redirect.is_some() && !tls;
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

    fn upstream_for(&mut self, url: &Url, scope: &Scope, at: &str) -> String {
        let tls = matches!(url.scheme.as_str(), "https" | "wss");
        let name = format!(
            "{}_{}",
            url.host
                .replace(['.', ':', '[', ']'], "_")
                .trim_matches('_'),
            url.port
        );
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
        let key = |r: &Route| (r.host.clone(), r.path.clone());
        if let Some(existing) = self.out.routes.iter().find(|r| key(r) == key(&route)) {
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
                    Ok(s) => self.timeout("upgraded_idle", s, format!("{}: ProxyPass ... {param} (how long an open desktop may be quiet)", d.at)),
                    Err(_) => comments.push(format!("  {param}: not a number of seconds; not translated")),
                },
                "connectiontimeout" => match v.parse() {
                    Ok(s) => self.timeout("connect", s, format!("{}: ProxyPass ... {param}", d.at)),
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
            return self.skip(&d.at, &d.text, "the backend path differs from the route's (deskgate strips a prefix or keeps the path; it does not replace one with another)");
        };
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
            None => self.skip(&d.at, &d.text, "only `^/prefix/(.*)$ URL/$1` shapes are translated (deskgate routes by prefix, not regex)"),
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
    ) -> Option<String> {
        let (pattern, target) = (d.arg(0), d.arg(1));
        let flags = Flags::parse(d.arg(2));
        let text = std::iter::once(d)
            .chain(conds.iter().copied())
            .map(|x| format!("{}: {}", x.at, x.text))
            .collect::<Vec<_>>();
        // `RewriteRule .* - [E=UPGRADE:%{HTTP:Upgrade}]` and friends: only there to carry
        // Upgrade through older Apache versions.
        if target == "-" && flags.env_only && mentions_upgrade(&d.text) {
            for x in std::iter::once(d).chain(conds.iter().copied()) {
                self.ignore_workaround(x);
            }
            return None;
        }
        let host_cond = conds
            .iter()
            .find(|c| c.arg(0).eq_ignore_ascii_case("%{HTTP_HOST}"));
        let upgrade_cond = conds
            .iter()
            .any(|c| c.arg(0).eq_ignore_ascii_case("%{HTTP:Upgrade}"));
        let null_cond = conds.iter().find(|c| is_no_answer(c.arg(0), c.arg(1)));
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
            let to_https = target.starts_with("https://%{HTTP_HOST}")
                || target.starts_with("https://%{SERVER_NAME}");
            let only_https_conds = conds.iter().all(|c| {
                c.arg(0).eq_ignore_ascii_case("%{HTTPS}")
                    || c.arg(0).eq_ignore_ascii_case("%{SERVER_PORT}")
            });
            if to_https
                && !tls
                && only_https_conds
                && matches!(
                    pattern,
                    "^" | "^/?(.*)$" | "^/(.*)$" | "^(.*)$" | ".*" | "(.*)"
                )
            {
                return Some(text.join("; "));
            }
            self.skip(&d.at, &d.text, "a redirect deskgate has no rule for (it redirects plain HTTP to HTTPS, and a resolver's NULL answer)");
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
        let whole_path = matches!(
            pattern,
            "^/(.*)$" | "^/?(.*)$" | "^/(.*)" | "^(.*)$" | "^/?(.*)"
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
            let scheme = target.split("://").next().unwrap_or("");
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
            self.out.routes.push(route);
            return None;
        }
        // A fixed target: `^/prefix/(.*)$ http://h:p/$1`.
        let prefix = pattern
            .strip_prefix('^')
            .and_then(|p| p.strip_suffix("(.*)$").or(p.strip_suffix("(.*)")))
            .map(|p| p.trim_end_matches('?').to_string());
        let base = target.strip_suffix("$1").and_then(Url::parse);
        match (prefix, base, host_cond) {
            (Some(prefix), Some(url), None) if literal(&prefix) => {
                let mut comments = text.clone();
                if upgrade_cond {
                    comments.push("  the Upgrade condition: deskgate passes WebSocket upgrades natively".into());
                }
                self.prefix_routes(vhost, scope, hosts, d, &prefix, &url, comments);
            }
            _ => self.skip(&d.at, &d.text, "a [P] rule of a shape the importer does not know (it knows `^/prefix/(.*)$ URL/$1` and RewriteMap lookups by host)"),
        }
        None
    }

    /// `RequestHeader set Authorization "Basic ..."`, possibly under `<If %{HTTP_HOST} =~>`:
    /// Basic auth on the upstreams (or resolvers) of the routes it covers.
    fn apply_scoped_auth(&mut self) {
        let scopes: Vec<Vec<(Option<String>, BasicAuth, Origin)>> =
            self.scoped_auth.drain(..).collect();
        for (vhost, auths) in scopes.into_iter().enumerate() {
            for (regex, auth, at) in auths {
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
                            r.comments.push(format!("  {at}: RequestHeader set Authorization \"Basic ...\": basic_auth (the password moved out of the YAML)"));
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
                        u.comments.push(format!("  {at}: RequestHeader set Authorization \"Basic ...\": basic_auth (the password moved out of the YAML)"));
                        used = true;
                    }
                }
                if !used {
                    self.out.skipped.push(format!("{at}: RequestHeader set Authorization: no translated route is covered by it"));
                }
            }
        }
    }

    fn finish(mut self) -> Conversion {
        for (_, map, _, text) in std::mem::take(&mut self.pending_fallbacks) {
            self.out.skipped.push(format!(
                "{}: a NULL redirect for RewriteMap {map}, which no [P] rule uses",
                text.first().cloned().unwrap_or_default()
            ));
        }
        let o = &self.out;
        let mut y = String::new();
        for h in &o.header {
            y.push_str(&format!("# {h}\n"));
        }
        if !o.ignored.is_empty() {
            y.push_str("#\n# Not translated, no routing or security effect:\n");
            for (name, at) in &o.ignored {
                y.push_str(&format!("#   {name}: {}\n", at.join(", ")));
            }
        }
        if !o.skipped.is_empty() {
            y.push_str(
                "#\n# NOT TRANSLATED, changes routing or security (review before switching):\n",
            );
            for s in &o.skipped {
                y.push_str(&format!("#   {s}\n"));
            }
        }
        y.push_str("\nlisteners:\n");
        for l in &o.listeners {
            for c in &l.comments {
                y.push_str(&format!("  # {c}\n"));
            }
            y.push_str(&format!("  - addr: {}\n", q(&l.addr)));
            if l.redirect_https && !l.proxies && l.certs.is_empty() {
                y.push_str("    redirect_https: true\n");
            }
            if !l.certs.is_empty() {
                y.push_str("    tls:\n      certs:\n");
                for (i, c) in l.certs.iter().enumerate() {
                    for cc in &c.comments {
                        y.push_str(&format!("        # {cc}\n"));
                    }
                    y.push_str(&format!(
                        "        - cert: {}\n          key: {}\n",
                        q(&c.cert),
                        q(&c.key)
                    ));
                    if i > 0 && !c.hosts.is_empty() {
                        y.push_str(&format!(
                            "          hosts: [{}]\n",
                            c.hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
            }
        }
        if !o.upstreams.is_empty() {
            y.push_str("\nupstreams:\n");
            for (name, u) in &o.upstreams {
                for c in &u.comments {
                    y.push_str(&format!("  # {c}\n"));
                }
                y.push_str(&format!("  {name}:\n    servers: [{}]\n", q(&u.server)));
                if let Some(verify) = u.tls {
                    y.push_str(&format!("    tls: {{ verify: {verify} }}\n"));
                }
                if let Some(a) = &u.basic_auth {
                    y.push_str(&format!(
                        "    basic_auth: {{ user: {}, {} }}\n",
                        q(&a.user),
                        a.secret
                    ));
                }
            }
        }
        if !o.routes.is_empty() {
            y.push_str("\nroutes:\n");
            for r in &o.routes {
                for c in &r.comments {
                    y.push_str(&format!("  # {c}\n"));
                }
                let mut first = true;
                let mut field = |y: &mut String, s: String| {
                    y.push_str(if first { "  - " } else { "    " });
                    first = false;
                    y.push_str(&s);
                    y.push('\n');
                };
                if let Some(h) = &r.host {
                    field(&mut y, format!("host: {}", q(h)));
                }
                field(&mut y, format!("path: {}", q(&r.path)));
                match &r.target {
                    Target::Named(n) => field(&mut y, format!("upstream: {n}")),
                    Target::Resolve {
                        url,
                        tls_verify,
                        basic_auth,
                        ..
                    } => {
                        field(&mut y, "upstream:".into());
                        y.push_str(&format!("      resolve: {}\n", q(url)));
                        let headers: Vec<String> = self
                            .opts
                            .resolver_headers
                            .iter()
                            .filter_map(|h| header_ref(h))
                            .collect();
                        if !headers.is_empty() {
                            y.push_str(&format!("      headers: {{ {} }}\n", headers.join(", ")));
                        }
                        if let Some(v) = tls_verify {
                            y.push_str(&format!("      tls: {{ verify: {v} }}\n"));
                        }
                        if let Some(a) = basic_auth {
                            y.push_str(&format!(
                                "      basic_auth: {{ user: {}, {} }}\n",
                                q(&a.user),
                                a.secret
                            ));
                        }
                    }
                }
                if r.strip_prefix {
                    y.push_str("    strip_prefix: true\n");
                }
                if let Some(f) = &r.fallback {
                    y.push_str(&format!("    fallback: {{ redirect: {} }}\n", q(f)));
                }
            }
        }
        if !o.timeouts.is_empty() {
            y.push_str("\ntimeouts:\n");
            for (k, (secs, why)) in &o.timeouts {
                for w in why {
                    y.push_str(&format!("  # {w}\n"));
                }
                y.push_str(&format!("  {k}: {secs}s\n"));
            }
        }
        if !o.headers.is_empty() {
            y.push_str("\nproxy_headers:\n  add:\n");
            for (k, (v, why)) in &o.headers {
                for w in why {
                    y.push_str(&format!("    # {w}\n"));
                }
                y.push_str(&format!("    {}: {}\n", q(k), q(v)));
            }
        }
        Conversion {
            yaml: y,
            skipped: self.out.skipped,
            ignored: self
                .out
                .ignored
                .into_iter()
                .map(|(k, v)| format!("{k} ({})", v.join(", ")))
                .collect(),
            secret_files: self.out.secret_files,
            notices: self.out.notices,
        }
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

fn mentions_upgrade(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("upgrade") || t.contains("connection")
}

/// A YAML double-quoted scalar (JSON's string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
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
        if authority.is_empty() || authority.contains(['$', '%', '{']) {
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

/// `"%{HTTP_HOST} =~ /^desktop-/"` -> `^desktop-`.
fn host_regex_of_if(args: &str) -> Option<String> {
    let a = args.trim().trim_matches('"');
    let rest = a.strip_prefix("%{HTTP_HOST}")?.trim_start();
    let rest = rest.strip_prefix("=~")?.trim();
    let inner = rest.strip_prefix('/')?;
    let end = inner.rfind('/')?;
    Some(inner[..end].to_string())
}

/// Whether a host regex (anchored at the start) covers a route host template: the regex's
/// literal start must be the template's start.
fn regex_covers(regex: &str, host: &str) -> bool {
    let r = regex.strip_prefix('^').unwrap_or(regex);
    let mut lit = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => lit.push(n),
                None => break,
            },
            '(' | '[' | '.' | '*' | '+' | '?' | '$' | '|' | '{' => break,
            c => lit.push(c),
        }
    }
    host.starts_with(&lit)
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

/// `X-API-Key: env:HUB_API_KEY` -> `X-API-Key: { env: HUB_API_KEY }`.
fn header_ref(spec: &str) -> Option<String> {
    let (name, source) = spec.split_once(':')?;
    let source = source.trim();
    let (kind, value) = source.split_once(':')?;
    matches!(kind, "env" | "file")
        .then(|| format!("{}: {{ {kind}: {} }}", q(name.trim()), q(value.trim())))
}

#[derive(Default)]
struct Flags {
    proxy: bool,
    redirect: Option<u16>,
    /// Only `E=` (set a variable) and flow flags: the rule does nothing else.
    env_only: bool,
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
            } else if !matches!(
                upper.as_str(),
                "L" | "LAST" | "NC" | "NOCASE" | "QSA" | "NE" | "END"
            ) {
                other = true;
            }
        }
        f.env_only = env && !other && !f.proxy && f.redirect.is_none();
        f
    }
}

#[cfg(test)]
mod tests;

//! `deskgate chp`: configurable-http-proxy's command line, so a hub that launches CHP
//! (JupyterHub: `c.ConfigurableHTTPProxy.command = ["deskgate", "chp"]`, or a
//! `configurable-http-proxy` symlink to deskgate) gets deskgate instead.
//!
//! The flags become the same YAML model every deskgate config is: they are laid over an
//! optional `-c deskgate.yaml` (flags win) and validated by `config::load_str`, so a hub's
//! proxy can also carry `dynamic.tls`, access checks, metrics and a Redis route store.

use crate::config::{self, Config, ConfigErrors, LoadOptions};
use clap::Parser;
use serde_yaml::{Mapping, Value};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "configurable-http-proxy",
    version,
    about = "deskgate speaking configurable-http-proxy's command line and routes API"
)]
pub struct ChpArgs {
    /// Public-facing IP of the proxy ('' or '*': all interfaces)
    #[arg(long)]
    ip: Option<String>,
    /// Public-facing port of the proxy
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Public-facing unix socket (instead of --ip/--port)
    #[arg(long)]
    socket: Option<PathBuf>,
    #[arg(long)]
    ssl_key: Option<PathBuf>,
    #[arg(long)]
    ssl_cert: Option<PathBuf>,
    /// Accepted for compatibility; deskgate uses rustls' safe protocol and cipher defaults
    #[arg(long)]
    ssl_ca: Option<PathBuf>,
    #[arg(long)]
    ssl_protocol: Option<String>,
    #[arg(long)]
    ssl_ciphers: Option<String>,
    #[arg(long)]
    ssl_allow_rc4: bool,
    #[arg(long)]
    ssl_dhparam: Option<PathBuf>,
    #[arg(long)]
    ssl_request_cert: bool,
    #[arg(long)]
    ssl_reject_unauthorized: bool,
    /// Inward-facing IP for API requests
    #[arg(long, default_value = "localhost")]
    api_ip: String,
    /// Inward-facing port for API requests (default: --port + 1)
    #[arg(long)]
    api_port: Option<u16>,
    /// Inward-facing unix socket for API requests (instead of --api-ip/--api-port)
    #[arg(long)]
    api_socket: Option<PathBuf>,
    #[arg(long)]
    api_ssl_key: Option<PathBuf>,
    #[arg(long)]
    api_ssl_cert: Option<PathBuf>,
    #[arg(long)]
    api_ssl_ca: Option<PathBuf>,
    #[arg(long)]
    api_ssl_request_cert: bool,
    #[arg(long)]
    api_ssl_reject_unauthorized: bool,
    #[arg(long)]
    client_ssl_key: Option<PathBuf>,
    #[arg(long)]
    client_ssl_cert: Option<PathBuf>,
    #[arg(long)]
    client_ssl_ca: Option<PathBuf>,
    #[arg(long)]
    client_ssl_request_cert: bool,
    #[arg(long)]
    client_ssl_reject_unauthorized: bool,
    /// Default proxy target (proto://host[:port]), the route for `/`
    #[arg(long)]
    default_target: Option<String>,
    /// Server for error pages: GET <target>/<code>?url=<request URL>
    #[arg(long)]
    error_target: Option<String>,
    /// Folder with <code>.html / error.html error pages
    #[arg(long)]
    error_path: Option<PathBuf>,
    /// Redirect plain HTTP on this port to the HTTPS proxy port
    #[arg(long)]
    redirect_port: Option<u16>,
    /// Accepted for compatibility: the redirect goes to --port
    #[arg(long)]
    redirect_to: Option<u16>,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Don't add X-Forwarded-* headers to proxied requests
    #[arg(long)]
    no_x_forward: bool,
    /// Don't prepend the target's path to proxied requests
    #[arg(long)]
    no_prepend_path: bool,
    /// Don't include the routing prefix in proxied requests
    #[arg(long)]
    no_include_prefix: bool,
    /// A header added to proxied requests, `Name: value` (repeatable)
    #[arg(long = "custom-header")]
    custom_header: Vec<String>,
    /// Comma-separated `k1:v1,k2:v2` (older spelling of --custom-header)
    #[arg(long)]
    custom_headers: Option<String>,
    /// Don't verify the TLS certificates of https targets (self-signed desktops)
    #[arg(long)]
    insecure: bool,
    /// Route by host: the host is the first segment of every route
    #[arg(long)]
    host_routing: bool,
    /// debug, info, warn or error
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Timeout (ms) for a client's whole request header
    #[arg(long)]
    timeout: Option<u64>,
    /// Timeout (ms) for a target's response
    #[arg(long)]
    proxy_timeout: Option<u64>,
    /// Idle time (ms) of a client's keep-alive connection between requests
    #[arg(long)]
    keep_alive_timeout: Option<u64>,
    /// Metrics listener (Prometheus `/metrics`)
    #[arg(long)]
    metrics_ip: Option<String>,
    #[arg(long)]
    metrics_port: Option<u16>,
    #[arg(long)]
    statsd_host: Option<String>,
    #[arg(long)]
    statsd_port: Option<u16>,
    #[arg(long)]
    statsd_prefix: Option<String>,
    /// A deskgate config laid under these flags (TLS to targets, access checks, route store)
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

/// What `deskgate chp` runs: the validated config, the route for `/`, the pid file to remove.
pub struct ChpPlan {
    pub config: Config,
    pub default_target: Option<String>,
    pub pid_file: Option<PathBuf>,
}

const TOKEN_ENV: &str = "CONFIGPROXY_AUTH_TOKEN";

/// What the hub got wrong: a flag, a pair of flags, or the config they make.
#[derive(Debug, thiserror::Error)]
pub enum ChpError {
    #[error("--log-level `{level}`: expected debug, info, warn or error")]
    LogLevel { level: String },
    /// `--ssl`, `--api-ssl`, `--client-ssl`: the key without the certificate or the reverse.
    #[error("{0}-key and {0}-cert go together")]
    HalfAPair(&'static str),
    #[error("{flag}-request-cert needs {flag}-ca (the CA client certificates must chain to)")]
    RequestCertWithoutCa { flag: &'static str },
    #[error("--redirect-port needs --ssl-key and --ssl-cert")]
    RedirectWithoutTls,
    #[error("--port 65535 leaves no default --api-port; give one")]
    NoApiPort,
    #[error("--custom-header `{header}`: expected `Name: value`")]
    CustomHeader { header: String },
    #[error("give --error-target or --error-path, not both")]
    ErrorTargetAndPath,
    #[error("{flag} {}: {source}", path.display())]
    Socket {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} `{ip}`: {source}")]
    Lookup {
        flag: &'static str,
        ip: String,
        source: std::io::Error,
    },
    #[error("{flag} `{ip}` resolves to no address")]
    NoAddress { flag: &'static str, ip: String },
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// CHP's `--X-request-cert` (ask for a client certificate, against `--X-ca`) and
/// `--X-reject-unauthorized` (turn away clients without a valid one), as deskgate's
/// `client_ca` and `client_auth`.
fn client_auth(
    request_cert: bool,
    reject_unauthorized: bool,
    ca: Option<&PathBuf>,
    flag: &'static str,
) -> Result<Vec<(&'static str, Value)>, ChpError> {
    if !request_cert {
        return Ok(Vec::new());
    }
    let Some(ca) = ca else {
        return Err(ChpError::RequestCertWithoutCa { flag });
    };
    let mode = if reject_unauthorized {
        "required"
    } else {
        "optional"
    };
    Ok(vec![
        ("client_ca", path_value(ca)),
        ("client_auth", Value::from(mode)),
    ])
}

impl ChpArgs {
    /// Flags accepted for compatibility that change nothing here: TLS settings rustls' defaults
    /// replace, statsd, and the client-side `--client-ssl-request-cert/-reject-unauthorized`.
    fn ignored(&self) -> Vec<&'static str> {
        given([
            // Without --ssl-request-cert, Node uses --ssl-ca for nothing a server does.
            (self.ssl_ca.is_some() && !self.ssl_request_cert, "--ssl-ca"),
            (self.ssl_protocol.is_some(), "--ssl-protocol"),
            (self.ssl_ciphers.is_some(), "--ssl-ciphers"),
            (self.ssl_allow_rc4, "--ssl-allow-rc4"),
            (self.ssl_dhparam.is_some(), "--ssl-dhparam"),
            (
                self.ssl_reject_unauthorized && !self.ssl_request_cert,
                "--ssl-reject-unauthorized",
            ),
            (
                self.api_ssl_reject_unauthorized && !self.api_ssl_request_cert,
                "--api-ssl-reject-unauthorized",
            ),
            // A client asks for no certificate; targets are verified unless --insecure.
            (self.client_ssl_request_cert, "--client-ssl-request-cert"),
            (
                self.client_ssl_reject_unauthorized,
                "--client-ssl-reject-unauthorized",
            ),
            (self.statsd_host.is_some(), "--statsd-host"),
            (self.statsd_port.is_some(), "--statsd-port"),
            (self.statsd_prefix.is_some(), "--statsd-prefix"),
        ])
    }

    /// `--log-level` as a log filter (CHP's `warning` and `critical` included).
    pub fn log_level(&self) -> Result<&'static str, ChpError> {
        Ok(match self.log_level.to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" => "debug",
            "info" => "info",
            "warn" | "warning" => "warn",
            "error" | "critical" => "error",
            other => {
                return Err(ChpError::LogLevel {
                    level: other.to_string(),
                })
            }
        })
    }

    /// The flags as deskgate YAML keys.
    fn overlay(&self, token_set: bool) -> Result<Mapping, ChpError> {
        let mut root = Mapping::new();
        let tls = match (&self.ssl_key, &self.ssl_cert) {
            (Some(key), Some(cert)) => {
                let mut tls = vec![(
                    "certs",
                    Value::Sequence(vec![yaml(&[
                        ("cert", path_value(cert)),
                        ("key", path_value(key)),
                    ])]),
                )];
                tls.extend(client_auth(
                    self.ssl_request_cert,
                    self.ssl_reject_unauthorized,
                    self.ssl_ca.as_ref(),
                    "--ssl",
                )?);
                Some(yaml(&tls))
            }
            (None, None) => None,
            _ => return Err(ChpError::HalfAPair("--ssl")),
        };
        let public = match &self.socket {
            Some(path) => unix_addr(path, "--socket")?,
            None => format!(
                "{}:{}",
                listen_ip(self.ip.as_deref().unwrap_or(""), "--ip")?,
                self.port
            ),
        };
        let mut public_listener = vec![("addr", Value::from(public))];
        if let Some(tls) = tls.clone() {
            public_listener.push(("tls", tls));
        }
        let mut listeners = vec![yaml(&public_listener)];
        if let Some(port) = self.redirect_port {
            if tls.is_none() {
                return Err(ChpError::RedirectWithoutTls);
            }
            let ip = listen_ip(self.ip.as_deref().unwrap_or(""), "--ip")?;
            listeners.push(yaml(&[
                ("addr", Value::from(format!("{ip}:{port}"))),
                ("redirect_https", Value::Bool(true)),
            ]));
        }
        root.insert("listeners".into(), Value::Sequence(listeners));

        let api = match &self.api_socket {
            Some(path) => unix_addr(path, "--api-socket")?,
            None => {
                let port = match self.api_port {
                    Some(p) => p,
                    None => self.port.checked_add(1).ok_or(ChpError::NoApiPort)?,
                };
                format!("{}:{port}", listen_ip(&self.api_ip, "--api-ip")?)
            }
        };
        let mut admin = vec![("addr", Value::from(api))];
        if token_set {
            admin.push(("token_env", Value::from(TOKEN_ENV)));
        } else {
            admin.push(("open", Value::Bool(true)));
        }
        match (&self.api_ssl_key, &self.api_ssl_cert) {
            (Some(key), Some(cert)) => {
                let mut tls = vec![("cert", path_value(cert)), ("key", path_value(key))];
                tls.extend(client_auth(
                    self.api_ssl_request_cert,
                    self.api_ssl_reject_unauthorized,
                    self.api_ssl_ca.as_ref(),
                    "--api-ssl",
                )?);
                admin.push(("tls", yaml(&tls)));
            }
            (None, None) => {}
            _ => return Err(ChpError::HalfAPair("--api-ssl")),
        }
        root.insert("admin".into(), yaml(&admin));

        let mut dynamic = Vec::new();
        // Toward targets: --client-ssl-ca instead of the system's roots, a client certificate
        // (JupyterHub's internal_ssl); verified unless --insecure, as Node's agent does.
        let mut target_tls = Vec::new();
        if self.insecure {
            target_tls.push(("verify", Value::Bool(false)));
        }
        if let Some(ca) = &self.client_ssl_ca {
            target_tls.push(("ca", path_value(ca)));
        }
        match (&self.client_ssl_key, &self.client_ssl_cert) {
            (Some(key), Some(cert)) => {
                target_tls.push(("client_cert", path_value(cert)));
                target_tls.push(("client_key", path_value(key)));
            }
            (None, None) => {}
            _ => return Err(ChpError::HalfAPair("--client-ssl")),
        }
        if !target_tls.is_empty() {
            dynamic.push(("tls", yaml(&target_tls)));
        }
        dynamic.push(("strip_prefix", Value::Bool(self.no_include_prefix)));
        dynamic.push(("prepend_path", Value::Bool(!self.no_prepend_path)));
        dynamic.push(("host_routing", Value::Bool(self.host_routing)));
        root.insert("dynamic".into(), yaml(&dynamic));

        let mut add = Mapping::new();
        let older = self
            .custom_headers
            .iter()
            .flat_map(|h| h.split(','))
            .map(str::to_string);
        for header in self.custom_header.iter().cloned().chain(older) {
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            if name.trim().is_empty() {
                return Err(ChpError::CustomHeader { header });
            }
            add.insert(name.trim().into(), value.trim().into());
        }
        let x_forwarded = if self.no_x_forward { "off" } else { "append" };
        root.insert(
            "proxy_headers".into(),
            yaml(&[
                ("x_forwarded", Value::from(x_forwarded)),
                ("add", Value::Mapping(add)),
            ]),
        );

        // CHP answers a failed target with 503, which JupyterHub's error pages expect.
        let mut errors = vec![("upstream_status", Value::from(503))];
        match (&self.error_target, &self.error_path) {
            (Some(_), Some(_)) => return Err(ChpError::ErrorTargetAndPath),
            (Some(t), None) => errors.push(("target", Value::from(t.as_str()))),
            (None, Some(p)) => errors.push(("path", path_value(p))),
            (None, None) => {}
        }
        root.insert("errors".into(), yaml(&errors));

        let mut timeouts = Vec::new();
        if let Some(ms) = self.proxy_timeout {
            timeouts.push(("read", Value::from(format!("{ms}ms"))));
        }
        if let Some(ms) = self.timeout.or(self.keep_alive_timeout) {
            timeouts.push(("client_header", Value::from(format!("{ms}ms"))));
        }
        // CHP exits on SIGTERM at once; a hub restarting its proxy waits for that.
        timeouts.push(("drain", Value::from("0s")));
        root.insert("timeouts".into(), yaml(&timeouts));

        if let Some(port) = self.metrics_port {
            let ip = listen_ip(
                self.metrics_ip.as_deref().unwrap_or("localhost"),
                "--metrics-ip",
            )?;
            root.insert(
                "metrics".into(),
                yaml(&[("addr", Value::from(format!("{ip}:{port}")))]),
            );
        }
        if let Some(p) = &self.pid_file {
            root.insert("pid_file".into(), path_value(p));
        }
        let level = self.log_level()?;
        root.insert("log".into(), yaml(&[("level", Value::from(level))]));
        Ok(root)
    }
}

/// The names of the flags that were given.
fn given<const N: usize>(flags: [(bool, &'static str); N]) -> Vec<&'static str> {
    flags
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect()
}

/// CHP's flags when deskgate is run as configurable-http-proxy: `deskgate chp ...`, or
/// installed as (or symlinked to) `configurable-http-proxy`. Looked for before deskgate's own
/// parser, which does not know CHP's flags.
pub fn flags_when_run_as_chp(mut args: impl Iterator<Item = String>) -> Option<Vec<String>> {
    let program = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    if std::path::Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "configurable-http-proxy")
    {
        return Some(rest);
    }
    // `configurable-http-proxy` too: compose's `command:` appends to the image's entry point.
    match rest.first().map(String::as_str) {
        Some("chp" | "configurable-http-proxy") => Some(rest[1..].to_vec()),
        _ => None,
    }
}

/// Parses CHP's flags (`args` without the program name); clap prints help, the version, or
/// the flag it did not know, and exits (0 or 2).
pub fn parse(args: Vec<String>) -> ChpArgs {
    ChpArgs::try_parse_from(std::iter::once("configurable-http-proxy".to_string()).chain(args))
        .unwrap_or_else(|e| e.exit())
}

/// Builds the config to run from the parsed flags.
pub fn plan(args: ChpArgs) -> Result<ChpPlan, ChpError> {
    for flag in args.ignored() {
        log::warn!("deskgate chp: {flag} is accepted and ignored");
    }
    let token_set = std::env::var(TOKEN_ENV).is_ok_and(|t| !t.is_empty());
    let overlay = args.overlay(token_set)?;
    let (name, mut base) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ChpError::ReadConfig {
                path: path.clone(),
                source,
            })?;
            let base = match serde_yaml::from_str::<Value>(&text) {
                Ok(Value::Mapping(m)) => m,
                _ => Mapping::new(),
            };
            // Check the file on its own first, so its problems carry its own line numbers;
            // its listeners come from the flags, so it need not have any.
            let mut own = text.clone();
            if !base.contains_key("listeners") {
                own.push_str("\nlisteners: [{ addr: \"127.0.0.1:0\" }]\n");
            }
            let name = path.display().to_string();
            config::load_str(&name, &own, LoadOptions::default()).map_err(ConfigErrors)?;
            (format!("{name} + chp flags"), base)
        }
        None => ("chp flags".to_string(), Mapping::new()),
    };
    lay_over(&mut base, overlay);
    let text = serde_yaml::to_string(&Value::Mapping(base))?;
    let config = config::load_str(&name, &text, LoadOptions::default()).map_err(ConfigErrors)?;
    if !token_set {
        log::warn!("REST API is not authenticated ({TOKEN_ENV} is not set)");
    }
    Ok(ChpPlan {
        config,
        default_target: args.default_target,
        pid_file: args.pid_file,
    })
}

/// Flags win over the file, one level deep: `dynamic.tls` from the file survives
/// `--no-include-prefix`, but `listeners` come only from the flags.
fn lay_over(base: &mut Mapping, overlay: Mapping) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) if key.as_str() != Some("admin") => {
                for (k, v) in o {
                    b.insert(k, v);
                }
            }
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn yaml(pairs: &[(&str, Value)]) -> Value {
    Value::Mapping(
        pairs
            .iter()
            .map(|(k, v)| (Value::from(*k), v.clone()))
            .collect(),
    )
}

fn path_value(p: &std::path::Path) -> Value {
    Value::from(p.display().to_string())
}

fn unix_addr(path: &std::path::Path, flag: &'static str) -> Result<String, ChpError> {
    let abs = std::path::absolute(path).map_err(|source| ChpError::Socket {
        flag,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(format!("unix:{}", abs.display()))
}

/// CHP's listen addresses: `''` and `*` are every interface, `localhost` is loopback, and
/// other names are looked up once.
fn listen_ip(ip: &str, flag: &'static str) -> Result<String, ChpError> {
    let ip = ip.trim();
    match ip {
        "" | "*" => return Ok("0.0.0.0".into()),
        "localhost" => return Ok("127.0.0.1".into()),
        _ => {}
    }
    if let Ok(addr) = ip.parse::<std::net::IpAddr>() {
        return Ok(match addr {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        });
    }
    use std::net::ToSocketAddrs;
    let found = (ip, 0)
        .to_socket_addrs()
        .map_err(|source| ChpError::Lookup {
            flag,
            ip: ip.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ChpError::NoAddress {
            flag,
            ip: ip.to_string(),
        })?;
    Ok(match found {
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
        a => a.ip().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ChpArgs, clap::Error> {
        ChpArgs::try_parse_from(
            std::iter::once("configurable-http-proxy").chain(args.iter().copied()),
        )
    }

    #[test]
    fn chp_flags_are_found_by_program_name_or_first_word() {
        let flags = |words: &[&str]| flags_when_run_as_chp(words.iter().map(|w| w.to_string()));
        let port = Some(vec!["--port".to_string(), "8000".to_string()]);
        assert_eq!(
            flags(&["/usr/bin/configurable-http-proxy", "--port", "8000"]),
            port
        );
        assert_eq!(flags(&["deskgate", "chp", "--port", "8000"]), port);
        assert_eq!(
            flags(&["deskgate", "configurable-http-proxy", "--port", "8000"]),
            port
        );
        assert_eq!(flags(&["deskgate", "-c", "chp"]), None);
        assert_eq!(flags(&["deskgate", "demo"]), None);
    }

    #[test]
    fn jupyterhub_command_line() {
        let a = parse(&[
            "--ip",
            "",
            "--port",
            "8000",
            "--api-ip",
            "127.0.0.1",
            "--api-port",
            "8001",
            "--error-target",
            "http://127.0.0.1:8081/hub/error",
            "--log-level=debug",
        ])
        .unwrap();
        let m = a.overlay(false).unwrap();
        let text = serde_yaml::to_string(&m).unwrap();
        assert!(text.contains("addr: 0.0.0.0:8000"), "{text}");
        assert!(text.contains("addr: 127.0.0.1:8001"), "{text}");
        assert!(text.contains("open: true"), "{text}");
        assert!(text.contains("level: debug"), "{text}");
        assert!(text.contains("x_forwarded: append"), "{text}");
    }

    #[test]
    fn unknown_flags_are_named() {
        let e = parse(&["--no-such-flag"]).unwrap_err().to_string();
        assert!(e.contains("--no-such-flag"), "{e}");
    }

    #[test]
    fn defaults_follow_chp() {
        let a = parse(&["--port", "9000"]).unwrap();
        let text = serde_yaml::to_string(&a.overlay(true).unwrap()).unwrap();
        assert!(text.contains("addr: 0.0.0.0:9000"), "{text}");
        assert!(text.contains("addr: 127.0.0.1:9001"), "{text}");
        assert!(text.contains("token_env: CONFIGPROXY_AUTH_TOKEN"), "{text}");
        assert!(text.contains("prepend_path: true"), "{text}");
        assert!(text.contains("strip_prefix: false"), "{text}");
    }
}

//! Builds the Pingora server from a validated config: one proxy service per listener
//! (TLS with SNI certificates and h2, or plain HTTP), sharing one `Gateway`; and runs it
//! (`deskgate -c FILE`, `deskgate chp` in `chp`).
//!
//! Start-up, `build`: the server's own settings -> the access log -> listeners checked free
//! -> each listener's role, certificates and limits -> the routing snapshot (`Gateway`) and
//! runtime routes -> the admin, metrics and proxy services -> background services -> ready.

pub mod chp;

use crate::acme::AcmeService;
use crate::config::{AccessLogFormat, Config, LoadOptions};
use crate::control::admin_api::AdminApi;
use crate::control::reload::Reloader;
use crate::edge::gateway::Gateway;
use crate::edge::limits::ConnectionLimits;
use crate::edge::proxy::{EdgeProxy, ListenerRole};
use crate::hub::route_store::{RouteStore, RouteStoreService};
use crate::hub::runtime_routes::RuntimeRoutes;
use crate::runtime::{self, Runtime};
use crate::tls::{CertResolver, CertSet};
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use rustls::server::danger::ClientCertVerifier;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// deskgate's own flags: the config to run or check, and how.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Config file (YAML)
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Only check the config: prints `FILE: ok` or `FILE:LINE:COL: problem` lines
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// With -t: do not read certificates or secret files (check syntax and references only)
    #[arg(long)]
    pub skip_files: bool,
    /// Take over the listening sockets of a running deskgate (zero-downtime binary upgrade)
    #[arg(short = 'u', long)]
    pub upgrade: bool,
}

/// `deskgate -c FILE`: loads and checks the config (with `-t`, only that), then serves it,
/// re-reading it on SIGHUP.
pub fn run(args: &ServeArgs) -> ExitCode {
    let Some(path) = &args.config else {
        eprintln!("deskgate: give a config with -c FILE, or try `deskgate demo`");
        return ExitCode::from(2);
    };
    let options = LoadOptions {
        skip_files: args.skip_files,
        ..LoadOptions::default()
    };
    let runtime = match runtime::load_file(path, options) {
        Ok(runtime) => runtime,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if args.test {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    serve(&runtime, args.upgrade, Some(path))
}

/// Starts logging, builds the server and runs it until it is stopped. Only a config read from
/// a file (`reload_from`) can be re-read on SIGHUP; the demo's lives in memory.
pub fn serve(runtime: &Runtime, upgrade: bool, reload_from: Option<&Path>) -> ExitCode {
    let config = &runtime.config;
    let level = config.log_level.clone().unwrap_or_else(|| "info".into());
    // Behind `log_noise`'s filter: WARN lines any client can cause are counted, not printed.
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).build();
    let _ = crate::telemetry::log_noise::install(logger);
    let opt = Opt {
        upgrade,
        ..Default::default()
    };
    let built = match build(runtime, opt) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("deskgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid_file = crate::control::reload::pid_file_for(config);
    if let Some(path) = reload_from {
        let reloader = Arc::new(Reloader {
            path: path.to_path_buf(),
            gateway: built.gateway.clone(),
            runtime_routes: built.runtime_routes.clone(),
            listener_addrs: config.listeners.iter().map(|l| l.addr.clone()).collect(),
        });
        if let Err(e) = reloader.listen_for_sighup() {
            eprintln!("deskgate: cannot handle SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
    }
    built.server.run(pingora::server::RunArgs::default());
    write_pending_routes(&built.runtime_routes);
    crate::control::reload::remove_pid_file_if_ours(&pid_file);
    ExitCode::SUCCESS
}

/// After the server stopped: route changes the state file's writer had not written yet
/// (it writes at most once a second), so a graceful stop loses no acknowledged route.
fn write_pending_routes(runtime_routes: &crate::hub::runtime_routes::RuntimeRoutes) {
    if let Err(e) = runtime_routes.flush() {
        log::error!("{e}");
    }
}

/// Why the server could not be built: what, where, and the error underneath.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    AddressTaken {
        addr: String,
        source: std::io::Error,
    },
    /// The route store's Redis or Sentinel settings (`hub::route_store` words it).
    #[error(transparent)]
    RouteStore(#[from] crate::hub::route_store::RouteStoreError),
    #[error("TLS settings for {listener}: {source}")]
    TlsSettings {
        listener: String,
        source: Box<pingora::Error>,
    },
    #[error("cannot write pid file {}: {source}", path.display())]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Built {
    pub server: Server,
    pub gateway: Arc<Gateway>,
    pub runtime_routes: Arc<RuntimeRoutes>,
}

pub fn build(runtime: &Runtime, opt: Opt) -> Result<Built, ServerError> {
    let config = &runtime.config;
    let pid_file = crate::control::reload::pid_file_for(config);
    let conf = server_conf(config, &pid_file);
    start_access_log(config)?;
    if !opt.upgrade {
        check_addresses_free(config)?;
    }
    crate::edge::handshake_failures::install();
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let listeners = plan_listeners(runtime);
    if let Some(limit) = config
        .listeners
        .iter()
        .filter_map(|l| l.max_connections)
        .min()
    {
        crate::telemetry::metrics::set_max_connections(limit);
    }
    let gateway = Arc::new(Gateway::new(runtime.edge.clone(), listeners.resolvers));
    let runtime_routes = RuntimeRoutes::new(
        gateway.clone(),
        runtime.dynamic.clone(),
        config.state_file.clone(),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let store = add_route_store(&mut server, config, &runtime_routes)?;
    let admin_api = |token, store, metrics_only| AdminApi {
        token,
        routes: runtime_routes.clone(),
        gateway: gateway.clone(),
        store,
        ready: ready.clone(),
        metrics_only,
        ui: Default::default(),
    };
    if let Some(admin) = &config.admin {
        let api = admin_api(admin.token.clone(), store.clone(), false);
        add_admin_service(&mut server, api, &admin.addr, runtime)?;
    }
    if let Some(addr) = &config.metrics_addr {
        let mut service =
            Service::new("deskgate metrics".to_string(), admin_api(None, store, true));
        bind_plain(&mut service, addr);
        server.add_service(service);
    }
    // The whole request header within `client_header` (vendored pingora-core 01 and
    // pingora-proxy 01): Pingora's own timeout restarts with every byte read.
    let client_header_timeout = Some(config.timeouts.client_header).filter(|d| !d.is_zero());
    for listener in listeners.proxies {
        add_proxy_service(&mut server, &gateway, listener, client_header_timeout)?;
    }
    add_background_services(&mut server, listeners.acme, &gateway);
    // Pingora binds listeners before it runs services; by the time requests can reach
    // /readyz, config is loaded and listeners are bound.
    ready.store(true, Ordering::Release);
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).map_err(|source| {
        ServerError::PidFile {
            path: pid_file.clone(),
            source,
        }
    })?;
    Ok(Built {
        server,
        gateway,
        runtime_routes,
    })
}

/// Pingora's own settings: threads, and a pid file and upgrade socket per instance, so several
/// deskgates (and their zero-downtime upgrades) can share a machine.
fn server_conf(config: &Config, pid_file: &Path) -> ServerConf {
    let mut conf = ServerConf::default();
    conf.threads = config.threads;
    conf.work_stealing = config.work_stealing;
    conf.upstream_keepalive_pool_size = config.upstream_keepalive_connections;
    conf.pid_file = pid_file.display().to_string();
    conf.upgrade_sock = format!("{}.upgrade.sock", pid_file.display());
    // After SIGTERM/SIGQUIT: stop accepting at once, then give open desktops the drain time.
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(config.timeouts.drain.as_secs());
    conf
}

fn start_access_log(config: &Config) -> Result<(), ServerError> {
    use crate::telemetry::access_log::{init, Format};
    let Some((format, path)) = &config.access_log else {
        return Ok(());
    };
    let format = match format {
        AccessLogFormat::Combined => Format::Combined,
        AccessLogFormat::Json => Format::Json,
    };
    init(format, path).map_err(|source| ServerError::AccessLog {
        path: path.clone(),
        source,
    })
}

/// A proxy listener as planned before the gateway exists (the gateway needs every TLS
/// listener's certificate resolver, for reloads).
struct ProxyListener {
    addr: String,
    role: ListenerRole,
    tls: Option<ListenerTls>,
    limits: Arc<ConnectionLimits>,
}

struct ListenerTls {
    resolver: Arc<CertResolver>,
    /// The listener answers ACME's TLS-ALPN-01 challenge.
    alpn_01: bool,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

struct PlannedListeners {
    proxies: Vec<ProxyListener>,
    /// Each TLS listener's certificate resolver, by address (reload swaps their certificates).
    resolvers: Vec<(String, Arc<CertResolver>)>,
    acme: Vec<AcmeService>,
}

/// Each listener's role (TLS, redirect to HTTPS, HSTS, client certificates), certificates and
/// connection limits; ACME listeners also get their renewal service.
fn plan_listeners(runtime: &Runtime) -> PlannedListeners {
    let config = &runtime.config;
    let https_port = config
        .listeners
        .iter()
        .find(|l| l.tls.is_some())
        .and_then(|l| l.addr.parse::<std::net::SocketAddr>().ok())
        .map_or(443, |a| a.port());
    let mut planned = PlannedListeners {
        proxies: Vec::new(),
        resolvers: Vec::new(),
        acme: Vec::new(),
    };
    for (l, listener_tls) in config.listeners.iter().zip(&runtime.listener_tls) {
        let role = ListenerRole {
            tls: l.tls.is_some(),
            redirect_https_port: l.redirect_https.then_some(https_port),
            redirect_to: l.redirect_to.as_deref().map(Arc::from),
            port: crate::edge::forwarding::port_header(&l.addr),
            client_auth: l.client_auth.is_some(),
            hsts: l
                .hsts
                .as_deref()
                .filter(|_| l.tls.is_some())
                .and_then(|v| http::HeaderValue::from_str(v).ok()),
        };
        let tls = listener_tls.as_ref().map(|listener_tls| {
            let resolver = CertResolver::new(CertSet::new(&listener_tls.certificates));
            planned.resolvers.push((l.addr.clone(), resolver.clone()));
            if let Some(acme) = &listener_tls.acme {
                planned.acme.push(AcmeService {
                    settings: acme.clone(),
                    resolver: resolver.clone(),
                });
            }
            ListenerTls {
                resolver,
                alpn_01: l
                    .acme
                    .as_ref()
                    .is_some_and(|a| a.challenge == crate::acme::ChallengeKind::TlsAlpn01),
                client_verifier: listener_tls.client_verifier.clone(),
            }
        });
        planned.proxies.push(ProxyListener {
            addr: l.addr.clone(),
            role,
            tls,
            limits: ConnectionLimits::new(l.max_connections, l.max_connections_per_client),
        });
    }
    planned
}

/// The Redis route store (`route_store:`), when configured, and its background service.
fn add_route_store(
    server: &mut Server,
    config: &Config,
    runtime_routes: &Arc<RuntimeRoutes>,
) -> Result<Option<Arc<RouteStore>>, ServerError> {
    let Some(spec) = &config.route_store else {
        return Ok(None);
    };
    let store = RouteStore::new(spec, runtime_routes.clone()).map_err(ServerError::RouteStore)?;
    server.add_service(background_service(
        "route store",
        RouteStoreService(store.clone()),
    ));
    Ok(Some(store))
}

fn add_admin_service(
    server: &mut Server,
    api: AdminApi,
    addr: &str,
    runtime: &Runtime,
) -> Result<(), ServerError> {
    let mut service = Service::new("deskgate admin".to_string(), api);
    match &runtime.admin_tls {
        Some(tls) => {
            let mut settings = tls_settings(tls.client_verifier.clone()).map_err(|source| {
                ServerError::TlsSettings {
                    listener: format!("admin {addr}"),
                    source,
                }
            })?;
            settings.set_cert_resolver(CertResolver::new(CertSet::new(&tls.certificates)));
            service.add_tls_with_settings(addr, None, settings);
            service.set_pre_tls_callback(Arc::new(crate::tls::plain_http::PlainHttpOnTlsPort));
        }
        None => bind_plain(&mut service, addr),
    }
    server.add_service(service);
    Ok(())
}

fn add_proxy_service(
    server: &mut Server,
    gateway: &Arc<Gateway>,
    listener: ProxyListener,
    client_header_timeout: Option<std::time::Duration>,
) -> Result<(), ServerError> {
    let ProxyListener {
        addr,
        role,
        tls,
        limits,
    } = listener;
    let proxy = EdgeProxy {
        gateway: gateway.clone(),
        role,
        limits,
    };
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        proxy,
        &format!("deskgate {addr}"),
    );
    let mut options = pingora::apps::HttpServerOptions::default();
    options.client_header_timeout = client_header_timeout;
    // A space or control byte in a request target is refused (400), as nginx and HAProxy do,
    // rather than percent-encoded into a request the client never sent (pingora-core 18;
    // bench/results/smuggle-2026-12-06.md: rl-space-target, rl-nul-target, rl-cr-in-line).
    options.refuse_illegal_request_target = true;
    if let Some(proxy) = service.app_logic_mut() {
        proxy.server_options = Some(options);
    }
    match tls {
        Some(tls) => {
            let mut settings =
                tls_settings(tls.client_verifier).map_err(|source| ServerError::TlsSettings {
                    listener: addr.clone(),
                    source,
                })?;
            settings.set_cert_resolver(tls.resolver);
            // Our order (edge/tls.rs: AES-128-GCM first) over the client's: rustls and
            // OpenSSL clients list AES-256-GCM-SHA384 first (vendored pingora-core patch 11).
            settings.set_prefer_server_cipher_order(true);
            // One ticket per full handshake, not rustls' two: each resumption uses one
            // and gets a new one, so a client always holds one (vendored pingora-core
            // patch 17).
            settings.set_tls13_tickets(1);
            if tls.alpn_01 {
                // Last, so browsers never negotiate it (vendored pingora-core patch 5).
                settings.set_alpn_protocols(vec![
                    b"h2".to_vec(),
                    b"http/1.1".to_vec(),
                    crate::tls::challenges::ACME_TLS_ALPN.to_vec(),
                ]);
            } else {
                settings.enable_h2();
            }
            service.add_tls_with_settings(&addr, None, settings);
            service.set_pre_tls_callback(Arc::new(crate::tls::plain_http::PlainHttpOnTlsPort));
        }
        None => bind_plain(&mut service, &addr),
    }
    server.add_service(service);
    Ok(())
}

/// Certificate renewal per ACME listener, the admin page's session history and quality,
/// health checks.
fn add_background_services(server: &mut Server, acme: Vec<AcmeService>, gateway: &Arc<Gateway>) {
    for service in acme {
        let name = format!("acme {}", service.settings.spec.hosts.join(","));
        server.add_service(background_service(&name, service));
    }
    server.add_service(background_service(
        "session history",
        crate::telemetry::sessions::HistorySampler,
    ));
    // `DESKGATE_SESSION_QUALITY=off` leaves the sampler out: for A/B measurements of its cost
    // (docs/operations.md, "Session quality").
    if std::env::var("DESKGATE_SESSION_QUALITY").as_deref() != Ok("off") {
        server.add_service(background_service(
            "session quality",
            crate::telemetry::sessions::QualitySampler,
        ));
    }
    let gateway = gateway.clone();
    server.add_service(background_service(
        "health checks",
        crate::upstream::health::HealthChecks {
            upstreams: Box::new(move || gateway.snapshot().upstreams.clone()),
        },
    ));
}

/// A TLS listener's settings; with a client verifier (mutual TLS), the verified subject is
/// read after each handshake for the requests on that connection.
fn tls_settings(
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> pingora::Result<TlsSettings> {
    match client_verifier {
        Some(v) => {
            let mut settings = TlsSettings::with_callbacks(Box::new(
                crate::tls::client_auth::SubjectAfterHandshake,
            ))?;
            settings.set_client_cert_verifier(v);
            Ok(settings)
        }
        None => TlsSettings::intermediate("", ""),
    }
}

/// A plain listener on `ip:port` or `unix:/path` (configurable-http-proxy's `--socket`); a
/// socket file left by an earlier run is replaced.
fn bind_plain<A>(service: &mut Service<A>, addr: &str) {
    match addr.strip_prefix("unix:") {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            service.add_uds(path, None)
        }
        None => service.add_tcp(addr),
    }
}

/// Pingora binds listeners in service threads and only panics there when an address is
/// taken, leaving a process that serves nothing; find that out before starting, and say so.
/// (An upgrade takes the old process's sockets instead, so it skips this.)
fn check_addresses_free(config: &Config) -> Result<(), ServerError> {
    let addrs = config
        .listeners
        .iter()
        .map(|l| l.addr.as_str())
        .chain(config.admin.as_ref().map(|a| a.addr.as_str()))
        .chain(config.metrics_addr.as_deref());
    for addr in addrs.filter(|a| !a.starts_with("unix:")) {
        std::net::TcpListener::bind(addr).map_err(|source| ServerError::AddressTaken {
            addr: addr.to_string(),
            source,
        })?;
    }
    Ok(())
}

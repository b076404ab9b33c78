//! Builds the Pingora server from a validated config: one proxy service per listener
//! (TLS with SNI certificates and h2, or plain HTTP), sharing one `Gateway`.

use crate::config::{AccessLogFormat, Config};
use crate::control::admin_api::AdminApi;
use crate::edge::gateway::Gateway;
use crate::edge::proxy::{EdgeProxy, ListenerRole};
use crate::hub::runtime_routes::RuntimeRoutes;
use crate::runtime::Runtime;
use crate::tls::{CertResolver, CertSet};
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct Built {
    pub server: Server,
    pub gateway: Arc<Gateway>,
    pub runtime_routes: Arc<RuntimeRoutes>,
}

pub fn build(runtime: &Runtime, opt: Opt) -> Result<Built, String> {
    let config = &runtime.config;
    let mut conf = ServerConf::default();
    conf.threads = config.threads;
    conf.upstream_keepalive_pool_size = config.upstream_keepalive_connections;
    // Per-instance pid file and upgrade socket, so several deskgates (and their zero-downtime
    // upgrades) can share a machine.
    let pid_file = crate::control::reload::pid_file_for(config);
    conf.pid_file = pid_file.display().to_string();
    conf.upgrade_sock = format!("{}.upgrade.sock", pid_file.display());
    // After SIGTERM/SIGQUIT: stop accepting at once, then give open desktops the drain time.
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(config.timeouts.drain.as_secs());
    if let Some((format, path)) = &config.access_log {
        use crate::telemetry::access_log::{init, Format};
        let format = match format {
            AccessLogFormat::Combined => Format::Combined,
            AccessLogFormat::Json => Format::Json,
        };
        init(format, path)?;
    }
    if !opt.upgrade {
        check_addresses_free(config)?;
    }
    crate::edge::handshake_failures::install();
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let https_port = config
        .listeners
        .iter()
        .find(|l| l.tls.is_some())
        .and_then(|l| l.addr.parse::<std::net::SocketAddr>().ok())
        .map_or(443, |a| a.port());

    let mut resolvers = Vec::new();
    let mut pending = Vec::new();
    let mut acme_services = Vec::new();
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
        let tls = match listener_tls {
            Some(listener_tls) => {
                let resolver = CertResolver::new(CertSet::new(&listener_tls.certificates));
                resolvers.push((l.addr.clone(), resolver.clone()));
                if let Some(acme) = &listener_tls.acme {
                    acme_services.push(crate::acme::AcmeService {
                        settings: acme.clone(),
                        resolver: resolver.clone(),
                    });
                }
                let alpn_01 = l
                    .acme
                    .as_ref()
                    .is_some_and(|a| a.challenge == crate::acme::ChallengeKind::TlsAlpn01);
                Some((resolver, alpn_01, listener_tls.client_verifier.clone()))
            }
            None => None,
        };
        let limits = crate::edge::limits::ConnectionLimits::new(
            l.max_connections,
            l.max_connections_per_client,
        );
        pending.push((l.addr.clone(), role, tls, limits));
    }
    if let Some(limit) = config
        .listeners
        .iter()
        .filter_map(|l| l.max_connections)
        .min()
    {
        crate::telemetry::metrics::set_max_connections(limit);
    }
    let gateway = Arc::new(Gateway::new(runtime.edge.clone(), resolvers));
    let runtime_routes = RuntimeRoutes::new(
        gateway.clone(),
        runtime.dynamic.clone(),
        config.state_file.clone(),
    );
    let ready = Arc::new(AtomicBool::new(false));
    let store = match &config.route_store {
        Some(spec) => {
            let store = crate::hub::route_store::RouteStore::new(spec, runtime_routes.clone())?;
            server.add_service(pingora::services::background::background_service(
                "route store",
                crate::hub::route_store::RouteStoreService(store.clone()),
            ));
            Some(store)
        }
        None => None,
    };
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
        let mut service =
            pingora::services::listening::Service::new("deskgate admin".to_string(), api);
        match &runtime.admin_tls {
            Some(tls) => {
                let mut settings = tls_settings(tls.client_verifier.clone())
                    .map_err(|e| format!("TLS settings for admin {}: {e}", admin.addr))?;
                settings.set_cert_resolver(CertResolver::new(CertSet::new(&tls.certificates)));
                service.add_tls_with_settings(&admin.addr, None, settings);
                service.set_pre_tls_callback(Arc::new(crate::tls::plain_http::PlainHttpOnTlsPort));
            }
            None => bind_plain(&mut service, &admin.addr),
        }
        server.add_service(service);
    }
    if let Some(addr) = &config.metrics_addr {
        let api = admin_api(None, store, true);
        let mut service =
            pingora::services::listening::Service::new("deskgate metrics".to_string(), api);
        bind_plain(&mut service, addr);
        server.add_service(service);
    }
    for (addr, role, tls, limits) in pending {
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
        // The whole request header within `client_header` (vendored pingora-core 01 and
        // pingora-proxy 01): Pingora's own timeout restarts with every byte read.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.client_header_timeout =
            Some(config.timeouts.client_header).filter(|d| !d.is_zero());
        if let Some(proxy) = service.app_logic_mut() {
            proxy.server_options = Some(options);
        }
        match tls {
            Some((resolver, alpn_01, client_verifier)) => {
                let mut settings = tls_settings(client_verifier)
                    .map_err(|e| format!("TLS settings for {addr}: {e}"))?;
                settings.set_cert_resolver(resolver);
                // Our order (edge/tls.rs: AES-128-GCM first) over the client's: rustls and
                // OpenSSL clients list AES-256-GCM-SHA384 first (vendored pingora-core patch 11).
                settings.set_prefer_server_cipher_order(true);
                // One ticket per full handshake, not rustls' two: each resumption uses one
                // and gets a new one, so a client always holds one (vendored pingora-core
                // patch 17).
                settings.set_tls13_tickets(1);
                if alpn_01 {
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
    }
    for service in acme_services {
        let name = format!("acme {}", service.settings.spec.hosts.join(","));
        server.add_service(pingora::services::background::background_service(
            &name, service,
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "session history",
        crate::telemetry::sessions::HistorySampler,
    ));
    // `DESKGATE_SESSION_QUALITY=off` leaves the sampler out: for A/B measurements of its cost
    // (docs/operations.md, "Session quality").
    if std::env::var("DESKGATE_SESSION_QUALITY").as_deref() != Ok("off") {
        server.add_service(pingora::services::background::background_service(
            "session quality",
            crate::telemetry::quality::QualitySampler,
        ));
    }
    server.add_service(pingora::services::background::background_service(
        "health checks",
        crate::upstream::health::HealthChecks {
            upstreams: {
                let gateway = gateway.clone();
                Box::new(move || gateway.snapshot().upstreams.clone())
            },
        },
    ));
    // Pingora binds listeners before it runs services; by the time requests can reach
    // /readyz, config is loaded and listeners are bound.
    ready.store(true, Ordering::Release);
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot write pid file {}: {e}", pid_file.display()))?;
    Ok(Built {
        server,
        gateway,
        runtime_routes,
    })
}

/// A TLS listener's settings; with a client verifier (mutual TLS), the verified subject is
/// read after each handshake for the requests on that connection.
fn tls_settings(
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
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
fn bind_plain<A>(service: &mut pingora::services::listening::Service<A>, addr: &str) {
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
fn check_addresses_free(config: &Config) -> Result<(), String> {
    let addrs = config
        .listeners
        .iter()
        .map(|l| l.addr.as_str())
        .chain(config.admin.as_ref().map(|a| a.addr.as_str()))
        .chain(config.metrics_addr.as_deref());
    for addr in addrs.filter(|a| !a.starts_with("unix:")) {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}

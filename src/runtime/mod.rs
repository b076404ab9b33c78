//! Assembly: a validated config (plain data, `config`) becomes the running objects: upstreams
//! with their pools, routes with their access checks, resolvers and stats, error pages,
//! listener certificates and ACME settings. Start-up, reload, `deskgate -t`, `deskgate chp`
//! and the demo all come through here, so a reload builds exactly what start-up builds.
//!
//! What can only fail here (a certificate that does not load, a server name that does not
//! resolve, a hub URL with a placeholder the route does not capture) is reported like a
//! validation error, at the `FILE:LINE:COL` of the YAML it came from, in the same list.

use crate::acme::rfc2136::{Rfc2136, TsigKey};
use crate::acme::AcmeSettings;
use crate::config::{
    self, AccessSpec, AcmeSpec, CertificateSpec, Config, ConfigError, LoadOptions, RouteSpec,
    UpstreamChoice,
};
use crate::edge::error_pages::ErrorPages;
use crate::edge::gateway::EdgeSettings;
use crate::hub::access::AccessCheck;
use crate::hub::resolver::Resolver;
use crate::hub::runtime_routes::DynamicSettings;
use crate::routing::{AccessGate, Route, UpstreamRef};
use crate::tls::{load_certified_key, Certificate};
use crate::upstream::balance::Pool;
use crate::upstream::settings::UpstreamTls;
use crate::upstream::Upstream;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// A config and what was built from it.
pub struct Runtime {
    /// The validated model: addresses, threads, the admin listener... (read by `server`).
    pub config: Config,
    /// What the request path sees (swapped in whole on reload).
    pub edge: EdgeSettings,
    /// Settings for the routes the hub registers at run time.
    pub dynamic: DynamicSettings,
    /// Per listener, in config order; None for plain-HTTP listeners.
    pub listener_tls: Vec<Option<ListenerTls>>,
    /// HTTPS on the admin listener (`admin.tls`).
    pub admin_tls: Option<ListenerTls>,
}

pub struct ListenerTls {
    /// Loaded certificates (none under `--skip-files`); the first is the default.
    pub certificates: Vec<Certificate>,
    pub acme: Option<Arc<AcmeSettings>>,
    /// Client certificates verified against `tls.client_ca` (mutual TLS).
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

pub fn load_file(path: &Path, opts: LoadOptions) -> Result<Runtime, Vec<ConfigError>> {
    finish(config::parse_file(path, opts), opts)
}

pub fn load_str(file: &str, text: &str, opts: LoadOptions) -> Result<Runtime, Vec<ConfigError>> {
    finish(config::parse_str(file, text, opts), opts)
}

/// Builds a config made elsewhere (`deskgate chp` writes its own).
pub fn assemble(config: Config, opts: LoadOptions) -> Result<Runtime, Vec<ConfigError>> {
    finish((Some(config), Vec::new()), opts)
}

/// Assembles even a config with problems (what validated of it), so one run reports every
/// problem, validation's and assembly's, sorted by position.
fn finish(
    (model, mut errors): (Option<Config>, Vec<ConfigError>),
    opts: LoadOptions,
) -> Result<Runtime, Vec<ConfigError>> {
    let Some(config) = model else {
        return Err(errors);
    };
    let mut assembler = Assembler {
        config: &config,
        opts,
        errors: Vec::new(),
    };
    let (edge, dynamic, listener_tls) = assembler.build();
    let admin_tls = assembler.admin_tls();
    errors.append(&mut assembler.errors);
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(errors);
    }
    Ok(Runtime {
        config,
        edge,
        dynamic,
        listener_tls,
        admin_tls,
    })
}

struct Assembler<'a> {
    config: &'a Config,
    opts: LoadOptions,
    errors: Vec<ConfigError>,
}

impl Assembler<'_> {
    /// A typed error from the layer that failed, reported at `path` in its own words and kept
    /// as the cause.
    fn failed(&mut self, path: &str, e: impl std::error::Error + Send + Sync + 'static) {
        let error = self.config.error_at(path, e.to_string()).caused_by(e);
        self.errors.push(error);
    }

    /// TLS toward an upstream with its CA and client certificate loaded (mutual TLS).
    fn upstream_tls(&mut self, at: &str, tls: &Option<UpstreamTls>) -> Option<UpstreamTls> {
        let mut tls = tls.clone()?;
        if let Some(files) = &tls.files {
            if !self.opts.skip_files {
                match files.load() {
                    Ok(identity) => tls.identity = Some(Arc::new(identity)),
                    Err(e) => self.failed(at, e),
                }
            }
        }
        Some(tls)
    }

    fn build(&mut self) -> (EdgeSettings, DynamicSettings, Vec<Option<ListenerTls>>) {
        let c = self.config;
        let upstreams = self.upstreams();
        let routes = c
            .routes
            .iter()
            .filter_map(|r| self.route(r, &upstreams))
            .map(Arc::new)
            .collect();
        let edge = EdgeSettings {
            routes,
            upstreams: Arc::new(upstreams),
            timeouts: c.timeouts,
            max_header_bytes: c.max_header_bytes,
            max_header_field_bytes: c.max_header_field_bytes,
            proxy_headers: Arc::new(c.proxy_headers.clone()),
            error_pages: Arc::new(ErrorPages {
                target: c.error_pages.target.clone(),
                dir: c.error_pages.dir.clone(),
                upstream_status: c.error_pages.upstream_status,
            }),
        };
        let d = &c.dynamic;
        let dynamic = DynamicSettings {
            tls: self.upstream_tls("dynamic.tls", &d.tls),
            authorization: d.authorization.clone(),
            block: d.block.clone(),
            access: d
                .access
                .as_ref()
                .and_then(|a| self.access_check("dynamic.auth", a, None)),
            novnc: d.novnc,
            strip_prefix: d.strip_prefix,
            prepend_path: d.prepend_path,
            host_routing: d.host_routing,
            websocket: d.websocket,
        };
        let listener_tls = c
            .listeners
            .iter()
            .map(|l| {
                let certs = l.tls.as_ref()?;
                Some(ListenerTls {
                    certificates: certs.iter().filter_map(|c| self.certificate(c)).collect(),
                    acme: l.acme.as_ref().and_then(|a| self.acme(a)).map(Arc::new),
                    client_verifier: self.client_verifier(l.client_auth.as_ref()),
                })
            })
            .collect();
        (edge, dynamic, listener_tls)
    }

    fn client_verifier(
        &mut self,
        spec: Option<&crate::config::ClientAuthSpec>,
    ) -> Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let spec = spec.filter(|_| !self.opts.skip_files)?;
        match crate::tls::client_auth::verifier(spec) {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed(&spec.at, e);
                None
            }
        }
    }

    fn admin_tls(&mut self) -> Option<ListenerTls> {
        let admin = self.config.admin.as_ref()?;
        let cert = admin.tls.as_ref()?;
        Some(ListenerTls {
            certificates: self.certificate(cert).into_iter().collect(),
            acme: None,
            client_verifier: self.client_verifier(admin.client_auth.as_ref()),
        })
    }

    fn upstreams(&mut self) -> HashMap<String, Arc<Upstream>> {
        let mut built = HashMap::new();
        for (name, spec) in &self.config.upstreams {
            let tls = self.upstream_tls(&format!("{}.tls", spec.at), &spec.tls);
            let mut upstream = Upstream::new(
                name,
                spec.servers.clone(),
                tls,
                spec.authorization.clone(),
                spec.retries,
            );
            if let Some(p) = &spec.pool {
                match Pool::new(
                    &upstream.servers,
                    p.policy.clone(),
                    p.health.clone(),
                    upstream.tls.as_ref(),
                    upstream.authorization.as_ref(),
                ) {
                    Ok(pool) => upstream.pool = Some(pool),
                    Err(e) => {
                        self.failed(&format!("{}.servers", spec.at), e);
                        continue;
                    }
                }
            }
            built.insert(name.clone(), Arc::new(upstream));
        }
        built
    }

    fn route(
        &mut self,
        spec: &RouteSpec,
        upstreams: &HashMap<String, Arc<Upstream>>,
    ) -> Option<Route> {
        let upstream = match &spec.upstream {
            // Absent only when the upstream itself failed, which is reported already.
            UpstreamChoice::Named(name) => UpstreamRef::Fixed(upstreams.get(name)?.clone()),
            UpstreamChoice::Template(t) => UpstreamRef::Template(t.clone()),
            UpstreamChoice::Resolve(r) => match Resolver::new(
                &r.url,
                r.cache,
                r.headers.clone(),
                self.upstream_tls(&format!("{}.upstream.tls", spec.at), &r.tls),
                r.authorization.clone(),
                &spec.captures,
                self.config.timeouts.connect,
            ) {
                Ok(r) => UpstreamRef::Resolver(Arc::new(r)),
                Err(e) => {
                    self.failed(&format!("{}.upstream.resolve", spec.at), e);
                    return None;
                }
            },
        };
        let access = match &spec.access {
            Some(a) => {
                Some(self.access_check(&format!("{}.auth", spec.at), a, Some(&spec.captures))?)
            }
            None => None,
        };
        Some(Route {
            access,
            strip_prefix: spec.strip_prefix,
            block: spec.block.clone(),
            novnc: spec.novnc,
            fallback_redirect: spec.fallback_redirect.clone(),
            drop_websocket_protocol: spec.drop_websocket_protocol,
            forward_cookies: spec.forward_cookies,
            response_rewrite: spec.response_rewrite.clone(),
            websocket: spec.websocket,
            ..Route::new(spec.host.clone(), spec.path.clone(), upstream)
        })
    }

    /// `captures` are the names the route captures; None for runtime routes (`dynamic.auth`),
    /// whose placeholders are filled from each route's data.
    fn access_check(
        &mut self,
        at: &str,
        spec: &AccessSpec,
        captures: Option<&[String]>,
    ) -> Option<Arc<dyn AccessGate>> {
        match AccessCheck::new(spec, captures, self.config.timeouts.connect) {
            Ok(check) => Some(Arc::new(check)),
            Err(e) => {
                self.failed(&format!("{at}.url"), e);
                None
            }
        }
    }

    fn certificate(&mut self, spec: &CertificateSpec) -> Option<Certificate> {
        if self.opts.skip_files {
            return None;
        }
        match load_certified_key(&spec.cert, &spec.key) {
            Ok(key) => Some(Certificate {
                hosts: spec.hosts.clone(),
                key,
            }),
            Err(e) => {
                self.failed(&format!("{}.cert", spec.at), e);
                None
            }
        }
    }

    fn acme(&mut self, spec: &AcmeSpec) -> Option<AcmeSettings> {
        let dns01 = match &spec.dns01 {
            Some(d) if !self.opts.skip_files => {
                let at = format!("{}.dns01.rfc2136.tsig_key_file", spec.at);
                let text = match std::fs::read_to_string(&d.tsig_key_file) {
                    Ok(text) => text,
                    Err(e) => {
                        let message = format!("cannot read {}: {e}", d.tsig_key_file.display());
                        self.errors
                            .push(self.config.error_at(&at, message).caused_by(e));
                        return None;
                    }
                };
                match TsigKey::parse(&text) {
                    Ok(key) => Some(Arc::new(Rfc2136 {
                        server: d.server.clone(),
                        zone: d.zone.clone(),
                        key,
                    })),
                    Err(e) => {
                        self.failed(&at, e);
                        return None;
                    }
                }
            }
            _ => None,
        };
        Some(AcmeSettings {
            spec: spec.clone(),
            dns01,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate that does not load is reported at its YAML position in the words it had,
    /// and the typed error (with the I/O error under it) stays reachable for logs.
    #[test]
    fn a_missing_certificate_keeps_its_cause() {
        let yaml = "listeners:\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      certs:\n        - { cert: /nonexistent/c.pem, key: /nonexistent/k.pem }\n";
        let errors = match load_str("t.yaml", yaml, LoadOptions::default()) {
            Ok(_) => panic!("a missing certificate loaded"),
            Err(errors) => errors,
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert!(
            e.to_string().starts_with("t.yaml:5:")
                && e.message == "cannot read certificate /nonexistent/c.pem: No such file or directory (os error 2)",
            "{e}"
        );
        let cause = std::error::Error::source(e).expect("a cause");
        assert!(matches!(
            cause.downcast_ref::<crate::tls::CertificateError>(),
            Some(crate::tls::CertificateError::ReadCertificate { .. })
        ));
        let io = cause.source().expect("the I/O error under it");
        assert!(io.downcast_ref::<std::io::Error>().is_some());
    }
}

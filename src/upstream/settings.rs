//! Plain settings and helpers for reaching upstreams: TLS toward a peer, timeouts, addresses,
//! Basic auth. Everything above (`Upstream`, balancing, the hub client, config) builds on these.

use base64::Engine;
use http::HeaderValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct UpstreamTls {
    pub verify: bool,
    pub sni: String,
    /// A private CA and/or a client certificate (mutual TLS), as files (`ca`, `client_cert`,
    /// `client_key`); `identity` holds them loaded.
    pub files: Option<Arc<TlsFiles>>,
    pub identity: Option<Arc<UpstreamIdentity>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Loaded: the CA the upstream's certificate must chain to (instead of the system roots), the
/// certificate and key deskgate presents (JupyterHub's `internal_ssl`).
pub struct UpstreamIdentity {
    pub ca: Option<Arc<pingora_core::protocols::tls::CaType>>,
    pub client: Option<Arc<pingora_core::utils::tls::CertKey>>,
}

impl std::fmt::Debug for UpstreamIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamIdentity")
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Why an upstream's CA or client certificate files (`tls: { ca, client_cert, client_key }`)
/// do not load, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM: {source}", path.display())]
    NotPem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds a certificate that does not parse: {source}", path.display())]
    BadCertificate {
        path: PathBuf,
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key in {}", path.display())]
    NoKey { path: PathBuf },
    #[error("give both `client_cert` and `client_key`")]
    HalfAClientCertificate,
}

impl TlsFiles {
    /// Reads and checks the files (PEM).
    pub fn load(&self) -> Result<UpstreamIdentity, TlsFilesError> {
        use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
        use TlsFilesError::*;
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let certs = |path: &Path| -> Result<Vec<Vec<u8>>, TlsFilesError> {
            let pem = read(path)?;
            let der: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|source| NotPem {
                    path: path.to_path_buf(),
                    source,
                })?;
            for d in &der {
                x509_parser::parse_x509_certificate(d).map_err(|source| BadCertificate {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
            if der.is_empty() {
                return Err(NoCertificate {
                    path: path.to_path_buf(),
                });
            }
            Ok(der)
        };
        let ca = match &self.ca {
            Some(p) => {
                let list: Vec<WrappedX509> = certs(p)?
                    .into_iter()
                    .map(|d| WrappedX509::new(d, parse_x509))
                    .collect();
                Some(Arc::from(list.into_boxed_slice()))
            }
            None => None,
        };
        let client = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => {
                let chain = certs(c)?;
                let pem = read(k)?;
                let key = rustls_pemfile::private_key(&mut pem.as_slice())
                    .map_err(|source| NotPem {
                        path: k.to_path_buf(),
                        source,
                    })?
                    .ok_or_else(|| NoKey {
                        path: k.to_path_buf(),
                    })?;
                Some(Arc::new(CertKey::new(chain, key.secret_der().to_vec())))
            }
            (None, None) => None,
            _ => return Err(HalfAClientCertificate),
        };
        Ok(UpstreamIdentity { ca, client })
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub upgraded_idle: Duration,
    pub client_header: Duration,
    /// How long an idle kept-alive upstream connection waits for its next request.
    pub upstream_keepalive: Duration,
    /// How long open connections (desktops) may drain after SIGTERM or an upgrade hand-over.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(60),
            upgraded_idle: Duration::from_secs(3600),
            client_header: Duration::from_secs(10),
            upstream_keepalive: Duration::from_secs(60),
            drain: Duration::from_secs(60),
        }
    }
}

/// Why an upstream address (`host:port`) is unusable: written wrong, or naming no address.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("expected `host:port`, found nothing")]
    Empty,
    #[error("expected `host:port` with a numeric port, found `{authority}`")]
    Port {
        authority: String,
        source: std::num::ParseIntError,
    },
    #[error("expected `host:port`, found `{authority}`")]
    NoHost { authority: String },
    #[error("cannot resolve {server}: {source}")]
    Lookup {
        server: String,
        source: std::io::Error,
    },
    #[error("{server} resolves to no address")]
    NoAddress { server: String },
}

/// `ip:port` directly, or a `host:port` (compose service names) through the async resolver:
/// Pingora's `HttpPeer::new(&str)` would resolve on the worker thread and panic on failure.
pub async fn resolve(server: &str) -> Result<std::net::SocketAddr, AddressError> {
    if let Ok(addr) = server.parse() {
        return Ok(addr);
    }
    let server = || server.to_string();
    tokio::net::lookup_host(server())
        .await
        .map_err(|source| AddressError::Lookup {
            server: server(),
            source,
        })?
        .next()
        .ok_or_else(|| AddressError::NoAddress { server: server() })
}

pub fn basic_authorization(user: &str, password: &str) -> HeaderValue {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v =
        HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    v.set_sensitive(true);
    v
}

/// The host part of `host:port` or `[v6]:port` (without brackets).
pub fn host_of(server: &str) -> &str {
    if let Some(rest) = server.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    server.rsplit_once(':').map_or(server, |(h, _)| h)
}

/// Checks `host:port` (or `[v6]:port`), adding `default_port` when none is given.
pub fn with_default_port(authority: &str, default_port: u16) -> Result<String, AddressError> {
    if authority.is_empty() {
        return Err(AddressError::Empty);
    }
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    let full = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let port = full.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
    port.parse::<u16>().map_err(|source| AddressError::Port {
        authority: authority.to_string(),
        source,
    })?;
    if host_of(&full).is_empty() {
        return Err(AddressError::NoHost {
            authority: authority.to_string(),
        });
    }
    Ok(full)
}

//! Downstream TLS: certificates chosen by SNI from a set that can be swapped on reload.
//!
//! Pingora's rustls listener takes a `ResolvesServerCert`; ours reads an `ArcSwap` snapshot,
//! so a reload replaces certificates for new handshakes without touching open connections.

pub mod challenges;
pub mod client_auth;
pub mod plain_http;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The process's TLS policy, installed before Pingora builds any config (it installs ring's
/// defaults only when none is set): ring with TLS 1.3's AES-128-GCM-SHA256 and
/// ChaCha20-Poly1305 preferred over AES-256-GCM-SHA384, as browsers prefer them. Toward
/// upstreams (which follow the client's order) that spares the SHA-384 key schedule and
/// AES-256's extra rounds on every handshake and record; listeners use this order over the
/// client's too (`set_prefer_server_cipher_order` in server.rs), as nginx's
/// `ssl_prefer_server_ciphers on` does.
pub fn install_crypto_provider() {
    #[cfg(feature = "aws-lc")]
    use rustls::crypto::aws_lc_rs::{cipher_suite::*, default_provider};
    #[cfg(not(feature = "aws-lc"))]
    use rustls::crypto::ring::{cipher_suite::*, default_provider};
    let mut provider = default_provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    // ring's groups in ring's order, so the A/B compares the providers, not the groups (with
    // rustls' default features aws-lc-rs would lead with the X25519+ML-KEM hybrid, and an
    // upstream without it would answer with a HelloRetryRequest).
    #[cfg(feature = "aws-lc")]
    {
        use rustls::crypto::aws_lc_rs::kx_group::{SECP256R1, SECP384R1, X25519};
        provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    }
    // Err only when one is installed already (a second call): keep that one.
    let _ = provider.install_default();
}

/// A listener certificate, loaded: its key and the hosts it is chosen for by SNI.
#[derive(Clone)]
pub struct Certificate {
    /// Host names (exact or `*.suffix`), lowercase.
    pub hosts: Vec<String>,
    pub key: Arc<CertifiedKey>,
}

/// Why a certificate and its key could not be loaded (or, for the demo and the tests, made), with
/// the file and the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot read certificate {}: {source}", path.display())]
    ReadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate {} is not valid PEM: {source}", path.display())]
    CertificatePem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("cannot read private key {}: {source}", path.display())]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("private key {} is not valid PEM: {source}", path.display())]
    KeyPem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no private key found in {}", path.display())]
    NoKey { path: PathBuf },
    #[error("unsupported private key in {}: {source}", path.display())]
    UnsupportedKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("certificate {} and key {} do not match: {source}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot generate certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertificateError> {
    use CertificateError::*;
    let cert_path = || cert.to_path_buf();
    let key_path = || key.to_path_buf();
    let cert_pem = std::fs::read(cert).map_err(|source| ReadCertificate {
        path: cert_path(),
        source,
    })?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| CertificatePem {
            path: cert_path(),
            source,
        })?;
    if chain.is_empty() {
        return Err(NoCertificate { path: cert_path() });
    }
    let key_pem = std::fs::read(key).map_err(|source| ReadKey {
        path: key_path(),
        source,
    })?;
    let der = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| KeyPem {
            path: key_path(),
            source,
        })?
        .ok_or_else(|| NoKey { path: key_path() })?;
    #[cfg(not(feature = "aws-lc"))]
    let signing = rustls::crypto::ring::sign::any_supported_type(&der);
    #[cfg(feature = "aws-lc")]
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der);
    let signing = signing.map_err(|source| UnsupportedKey {
        path: key_path(),
        source,
    })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|source| Mismatch {
        cert: cert_path(),
        key: key_path(),
        source,
    })?;
    Ok(Arc::new(ck))
}

struct Entry {
    /// Exact names and `.suffix` for `*.suffix`.
    exact: Vec<String>,
    suffixes: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// The certificates of one TLS listener; the first is the default for unknown or absent SNI.
pub struct CertSet {
    entries: Vec<Entry>,
}

impl CertSet {
    pub fn new(certs: &[Certificate]) -> CertSet {
        let entries = certs
            .iter()
            .map(|c| {
                let key = c.key.clone();
                let (suffixes, exact) = c
                    .hosts
                    .iter()
                    .cloned()
                    .partition::<Vec<_>, _>(|h| h.starts_with("*."));
                Entry {
                    exact,
                    suffixes: suffixes.into_iter().map(|s| s[1..].to_string()).collect(),
                    key,
                }
            })
            .collect();
        CertSet { entries }
    }

    /// One certificate (an ACME one) for its hosts, exact or `*.suffix`.
    pub fn for_hosts(hosts: &[String], key: Arc<CertifiedKey>) -> CertSet {
        let (suffixes, exact) = hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .partition::<Vec<_>, _>(|h| h.starts_with("*."));
        CertSet {
            entries: vec![Entry {
                exact,
                suffixes: suffixes.into_iter().map(|s| s[1..].to_string()).collect(),
                key,
            }],
        }
    }

    /// The certificate naming `sni`, if one does.
    fn named(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = sni?.to_ascii_lowercase();
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.exact.iter().any(|h| *h == name))
        {
            return Some(e.key.clone());
        }
        self.entries
            .iter()
            .find(|e| {
                e.suffixes
                    .iter()
                    .any(|s| name.ends_with(s.as_str()) && name.len() > s.len())
            })
            .map(|e| e.key.clone())
    }

    fn choose(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.named(sni)
            .or_else(|| self.entries.first().map(|e| e.key.clone()))
    }
}

/// Shared with the listener; `swap` on reload, `set_managed` when ACME renews.
pub struct CertResolver {
    current: ArcSwap<CertSet>,
    /// The ACME certificate, chosen first for its hosts (and the default without others).
    managed: ArcSwap<CertSet>,
}

impl CertResolver {
    pub fn new(set: CertSet) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: ArcSwap::from_pointee(set),
            managed: ArcSwap::from_pointee(CertSet {
                entries: Vec::new(),
            }),
        })
    }

    pub fn set_managed(&self, set: CertSet) {
        self.managed.store(Arc::new(set));
    }
    pub fn swap(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertResolver({} certificates)",
            self.current.load().entries.len()
        )
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        let acme_validation = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == challenges::ACME_TLS_ALPN));
        if acme_validation {
            // TLS-ALPN-01: only the challenge certificate will do (RFC 8737 section 3).
            return challenges::CHALLENGES.alpn_cert(sni);
        }
        let managed = self.managed.load();
        managed
            .named(sni)
            .or_else(|| self.current.load().choose(sni))
            .or_else(|| managed.choose(sni))
    }
}

/// A self-signed certificate for the demo and the tests, written as PEM files.
pub fn write_self_signed(
    dir: &Path,
    stem: &str,
    names: &[&str],
) -> Result<(PathBuf, PathBuf), CertificateError> {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(CertificateError::Generate)?;
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text).map_err(|source| CertificateError::Write {
            path: path.clone(),
            source,
        })
    };
    write(&cert, ck.cert.pem())?;
    write(&key, ck.key_pair.serialize_pem())?;
    Ok((cert, key))
}

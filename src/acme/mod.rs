//! Certificates without certbot: a TLS listener's `acme:` block obtains and renews its
//! certificate from an ACME CA (Let's Encrypt, or any RFC 8555 server) through the
//! `instant-acme` client, answering HTTP-01 on the plain listener, TLS-ALPN-01 on the TLS
//! listener, or DNS-01 through RFC 2136 updates (wildcards).
//!
//! The certificate, its key and the account are stored 0600 under `storage`; a stored
//! certificate serves at once on start. Renewal starts at 2/3 of the lifetime (or after
//! `renew_after`); a new certificate is swapped into the listener's resolver, so open
//! connections keep theirs and new handshakes get the new one. Failures are logged, counted
//! (`deskgate_acme_failures_total`) and retried with backoff (5 s doubling to 1 h) while the
//! current certificate keeps serving.

pub mod rfc2136;

use crate::telemetry::metrics;
use crate::tls::challenges::CHALLENGES;
use crate::tls::{CertResolver, CertSet};
use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::AcmeSpec;
pub use crate::config::ChallengeKind;

/// A listener's `acme:` block, with its TSIG key read (built by `runtime`).
pub struct AcmeSettings {
    pub spec: AcmeSpec,
    pub dns01: Option<Arc<rfc2136::Rfc2136>>,
}

/// Why a certificate could not be loaded, ordered or stored: the step, where, and the error
/// underneath (the CA's, the file system's, the DNS server's).
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("no stored certificate in {}", dir.display())]
    NothingStored { dir: PathBuf },
    #[error("{}: {source}", path.display())]
    ReadStored {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Certificate(#[from] crate::tls::CertificateError),
    #[error("certificate is not PEM: {0}")]
    NotPem(#[source] x509_parser::nom::Err<x509_parser::error::PEMError>),
    #[error("certificate is not X.509: {0}")]
    NotX509(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error("HTTP client for {directory}: {source}")]
    HttpClient {
        directory: String,
        source: instant_acme::Error,
    },
    #[error("{}: not account credentials: {source}", path.display())]
    Credentials {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    EncodeCredentials(#[source] serde_json::Error),
    /// An error of the CA's conversation, with its likely cause named (`AcmeService::explain`).
    #[error("{explained}")]
    Ca {
        explained: String,
        source: instant_acme::Error,
    },
    #[error("waiting for validation: {0}")]
    Validation(#[source] instant_acme::Error),
    #[error("the CA did not validate the {challenge:?} challenge (order {status:?})")]
    NotValidated {
        challenge: ChallengeKind,
        status: OrderStatus,
    },
    #[error("finalizing: {0}")]
    Finalize(#[source] instant_acme::Error),
    #[error("downloading the certificate: {0}")]
    Download(#[source] instant_acme::Error),
    #[error("authorization: {0}")]
    Authorization(#[source] instant_acme::Error),
    #[error("authorization is {0:?}")]
    AuthorizationState(AuthorizationStatus),
    #[error("the CA offers no {0:?} challenge")]
    NoChallenge(ChallengeType),
    #[error("dns-01 needs `dns01: {{ rfc2136: ... }}`")]
    NoDns01Settings,
    #[error(transparent)]
    DnsUpdate(#[from] rfc2136::DnsUpdateError),
    #[error("challenge for {identifier}: {source}")]
    ChallengeReady {
        identifier: String,
        source: instant_acme::Error,
    },
    #[error("{0}")]
    AlpnCertificate(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate in force: its key and validity (Unix seconds).
struct Issued {
    key: Arc<CertifiedKey>,
    not_before: u64,
    not_after: u64,
    /// When this process stored it (file time), for `renew_after`.
    stored_at: u64,
}

/// The background task keeping one listener's certificate current.
pub struct AcmeService {
    pub settings: Arc<AcmeSettings>,
    pub resolver: Arc<CertResolver>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const FIRST_RETRY: Duration = Duration::from_secs(5);
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut current = match self.load_stored() {
            Ok(issued) => {
                self.install(&issued);
                Some(issued)
            }
            Err(e) => {
                log::info!("acme {}: {e}; ordering one", self.label());
                None
            }
        };
        let mut backoff = FIRST_RETRY;
        loop {
            let wait = current
                .as_ref()
                .map_or(0, |c| self.renew_at(c).saturating_sub(now_secs()));
            if wait > 0 {
                let nap = Duration::from_secs(wait).min(LONGEST_WAIT);
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(nap) => continue,
                }
            }
            match self.issue().await {
                Ok(issued) => {
                    let until = chrono::DateTime::from_timestamp(issued.not_after as i64, 0)
                        .map_or_else(|| issued.not_after.to_string(), |t| t.to_rfc3339());
                    log::info!(
                        "acme {}: certificate issued, valid until {until}",
                        self.label()
                    );
                    metrics::ACME_ISSUED.inc();
                    self.install(&issued);
                    current = Some(issued);
                    backoff = FIRST_RETRY;
                }
                Err(e) => {
                    metrics::ACME_FAILURES.inc();
                    log::error!(
                        "acme {}: {e}; {} keeps serving, retry in {}s",
                        self.label(),
                        if current.is_some() {
                            "the current certificate"
                        } else {
                            "no certificate yet,"
                        },
                        backoff.as_secs()
                    );
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(LONGEST_WAIT);
                }
            }
        }
    }
}

impl AcmeService {
    fn label(&self) -> String {
        self.settings.spec.hosts.join(",")
    }

    fn dir(&self) -> PathBuf {
        let stem: String = self.settings.spec.hosts[0]
            .chars()
            .map(|c| if c == '*' { '_' } else { c })
            .collect();
        self.settings.spec.storage.join(stem)
    }

    /// When to renew: `renew_after` past storing, else 2/3 of the way through its validity.
    fn renew_at(&self, c: &Issued) -> u64 {
        match self.settings.spec.renew_after {
            Some(after) => c.stored_at + after.as_secs(),
            None => c.not_before + (c.not_after.saturating_sub(c.not_before)) * 2 / 3,
        }
    }

    fn install(&self, c: &Issued) {
        self.resolver
            .set_managed(CertSet::for_hosts(&self.settings.spec.hosts, c.key.clone()));
        metrics::set_certificate_expiry(&self.settings.spec.hosts, c.not_after);
    }

    fn load_stored(&self) -> Result<Issued, AcmeError> {
        let dir = self.dir();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() {
            return Err(AcmeError::NothingStored { dir });
        }
        let pem = std::fs::read(&cert).map_err(|source| AcmeError::ReadStored {
            path: cert.clone(),
            source,
        })?;
        let (not_before, not_after) = validity(&pem)?;
        let stored_at = std::fs::metadata(&cert)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        Ok(Issued {
            key: crate::tls::load_certified_key(&cert, &key)?,
            not_before,
            not_after,
            stored_at,
        })
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let builder = match &self.settings.spec.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(|source| AcmeError::HttpClient {
            directory: self.settings.spec.directory.clone(),
            source,
        })?;
        let path = self.settings.spec.storage.join("account.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let credentials: AccountCredentials =
                serde_json::from_str(&text).map_err(|source| AcmeError::Credentials {
                    path: path.clone(),
                    source,
                })?;
            return builder
                .from_credentials(credentials)
                .await
                .map_err(|e| self.explain(&format!("account from {}", path.display()), e));
        }
        let contact: Vec<&str> = self
            .settings
            .spec
            .contact
            .iter()
            .map(String::as_str)
            .collect();
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.settings.spec.directory.clone(),
                None,
            )
            .await
            .map_err(|e| self.explain("creating an account", e))?;
        let json = serde_json::to_vec(&credentials).map_err(AcmeError::EncodeCredentials)?;
        private_dir(&self.settings.spec.storage)?;
        write_private(&path, &json)?;
        Ok(account)
    }

    /// An ACME error with its cause named, so the log says what to fix (an untrusted
    /// directory certificate, DNS, a refused connection, a rate limit) and where.
    fn explain(&self, what: &str, e: instant_acme::Error) -> AcmeError {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        let directory = &self.settings.spec.directory;
        let lower = chain.to_ascii_lowercase();
        let cause = if lower.contains("unknownissuer")
            || lower.contains("invalid peer certificate")
            || lower.contains("certificate verify")
        {
            match &self.settings.spec.directory_ca {
                Some(ca) => format!("the directory's HTTPS certificate is not signed by `directory_ca` ({})", ca.display()),
                None => "the directory's HTTPS certificate is not trusted: set `directory_ca:` to the CA certificate (PEM) that signed it".to_string(),
            }
        } else if lower.contains("dns error")
            || lower.contains("failed to lookup")
            || lower.contains("name or service not known")
        {
            "the directory's host name does not resolve (DNS)".to_string()
        } else if lower.contains("connection refused") {
            "the connection to the directory was refused (is the CA running, is the port right?)"
                .to_string()
        } else if lower.contains("ratelimited") {
            "the CA rate-limits this account or these names; retries back off".to_string()
        } else if lower.contains("timed out") || lower.contains("timeout") {
            "the directory did not answer in time".to_string()
        } else {
            String::new()
        };
        let explained = if cause.is_empty() {
            format!("{what} at {directory}: {chain}")
        } else {
            format!("{what} at {directory}: {cause} ({chain})")
        };
        AcmeError::Ca {
            explained,
            source: e,
        }
    }

    async fn issue(&self) -> Result<Issued, AcmeError> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .settings
            .spec
            .hosts
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut order = match account.new_order(&NewOrder::new(&identifiers)).await {
            Ok(o) => o,
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("accountDoesNotExist") {
                    // The CA no longer knows the stored account (a reset test CA): make a new
                    // one next time.
                    let _ = std::fs::remove_file(self.settings.spec.storage.join("account.json"));
                }
                return Err(self.explain("new order", e));
            }
        };
        let mut pending = Pending::default();
        let prepared = self.prepare_challenges(&mut order, &mut pending).await;
        let ready = match prepared {
            Ok(()) => order
                .poll_ready(&RetryPolicy::default().timeout(Duration::from_secs(60)))
                .await
                .map_err(AcmeError::Validation),
            Err(e) => Err(e),
        };
        pending.clear(self.settings.dns01.as_deref()).await;
        match ready? {
            OrderStatus::Ready => {}
            status => {
                return Err(AcmeError::NotValidated {
                    challenge: self.settings.spec.challenge,
                    status,
                })
            }
        }
        let key_pem = order.finalize().await.map_err(AcmeError::Finalize)?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::default().timeout(Duration::from_secs(60)))
            .await
            .map_err(AcmeError::Download)?;
        let dir = self.dir();
        private_dir(&self.settings.spec.storage)?;
        private_dir(&dir)?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        write_private(&key, key_pem.as_bytes())?;
        write_private(&cert, chain_pem.as_bytes())?;
        let (not_before, not_after) = validity(chain_pem.as_bytes())?;
        Ok(Issued {
            key: crate::tls::load_certified_key(&cert, &key)?,
            not_before,
            not_after,
            stored_at: now_secs(),
        })
    }

    async fn prepare_challenges(
        &self,
        order: &mut instant_acme::Order,
        pending: &mut Pending,
    ) -> Result<(), AcmeError> {
        let kind = match self.settings.spec.challenge {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            ChallengeKind::Dns01 => ChallengeType::Dns01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::Authorization)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(AcmeError::AuthorizationState(other)),
            }
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::NoChallenge(kind.clone()))?;
            let key_auth = challenge.key_authorization();
            let identifier = challenge.identifier().to_string();
            let host = identifier.trim_start_matches("*.").to_string();
            match self.settings.spec.challenge {
                ChallengeKind::Http01 => {
                    CHALLENGES.put_http(&challenge.token, key_auth.as_str());
                    pending.http.push(challenge.token.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    CHALLENGES
                        .put_alpn(&host, alpn_certificate(&host, key_auth.digest().as_ref())?);
                    pending.alpn.push(host);
                }
                ChallengeKind::Dns01 => {
                    let dns = self
                        .settings
                        .dns01
                        .as_ref()
                        .ok_or(AcmeError::NoDns01Settings)?;
                    let name = format!("_acme-challenge.{host}");
                    if !pending.dns.contains(&name) {
                        // Stale answers of an earlier attempt would not validate.
                        dns.clear_txt(&name).await?;
                        pending.dns.push(name.clone());
                    }
                    dns.add_txt(&name, &key_auth.dns_value()).await?;
                }
            }
            challenge
                .set_ready()
                .await
                .map_err(|source| AcmeError::ChallengeReady {
                    identifier: identifier.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Answers put up for one order, taken down whatever its outcome.
#[derive(Default)]
struct Pending {
    http: Vec<String>,
    alpn: Vec<String>,
    dns: Vec<String>,
}

impl Pending {
    async fn clear(self, dns: Option<&rfc2136::Rfc2136>) {
        for token in &self.http {
            CHALLENGES.remove_http(token);
        }
        for host in &self.alpn {
            CHALLENGES.remove_alpn(host);
        }
        if let Some(dns) = dns {
            for name in &self.dns {
                if let Err(e) = dns.clear_txt(name).await {
                    log::warn!("acme: removing {name}: {e}");
                }
            }
        }
    }
}

/// The self-signed certificate of TLS-ALPN-01 (RFC 8737): the name, and the key
/// authorization's digest in the acmeIdentifier extension.
fn alpn_certificate(host: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| AcmeError::AlpnCertificate(e);
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| failed(e.into()))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| failed(e.into()))?;
    let cert = params.self_signed(&key).map_err(|e| failed(e.into()))?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| failed(e.into()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// (notBefore, notAfter) of the first certificate in a PEM chain, in Unix seconds.
fn validity(pem: &[u8]) -> Result<(u64, u64), AcmeError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(AcmeError::NotPem)?;
    let cert = pem.parse_x509().map_err(AcmeError::NotX509)?;
    let v = cert.validity();
    Ok((
        v.not_before.timestamp().max(0) as u64,
        v.not_after.timestamp().max(0) as u64,
    ))
}

fn private_dir(dir: &Path) -> Result<(), AcmeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AcmeError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AcmeError> {
    crate::support::secret::write_private(path, bytes).map_err(|source| AcmeError::Write {
        path: path.to_path_buf(),
        source,
    })
}

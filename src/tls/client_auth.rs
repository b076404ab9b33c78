//! Mutual TLS on listeners (`tls.client_ca`): client certificates verified against a CA, and
//! the verified subject carried from the handshake to the request (`X-Client-Cert-Subject`
//! toward upstreams and access checks, `client_subject` in the access log).

use crate::config::ClientAuthSpec;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use std::any::Any;
use std::sync::Arc;

/// The request header carrying the verified subject; whatever a client sends under this name
/// is removed first on listeners with client authentication.
pub const SUBJECT_HEADER: &str = "x-client-cert-subject";

/// The verified client certificate's subject (`CN=alice, O=hub`), attached to the connection.
pub struct ClientSubject(pub String);

/// Reads the subject once per connection, after the handshake verified the certificate.
pub struct SubjectAfterHandshake;

#[async_trait]
impl TlsAccept for SubjectAfterHandshake {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(Arc::new(ClientSubject(cert.subject().to_string())))
    }
}

pub fn verifier(spec: &ClientAuthSpec) -> Result<Arc<dyn ClientCertVerifier>, ClientCaError> {
    let path = || spec.ca.clone();
    let pem = std::fs::read(&spec.ca).map_err(|source| ClientCaError::Read {
        path: path(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|source| ClientCaError::NotPem {
            path: path(),
            source,
        })?;
        roots.add(cert).map_err(|source| ClientCaError::Unusable {
            path: path(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(ClientCaError::NoCertificate { path: path() });
    }
    let builder = WebPkiClientVerifier::builder(Arc::new(roots));
    let builder = if spec.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|source| ClientCaError::Verifier {
        path: path(),
        source,
    })
}

/// Why a listener's `client_ca` cannot verify clients, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not PEM: {source}", path.display())]
    NotPem {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a usable CA certificate: {source}", path.display())]
    Unusable {
        path: std::path::PathBuf,
        source: rustls::Error,
    },
    #[error("no CA certificate in {}", path.display())]
    NoCertificate { path: std::path::PathBuf },
    #[error("client verifier from {}: {source}", path.display())]
    Verifier {
        path: std::path::PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
}

/// The verified client certificate's subject goes upstream (and to access checks) in
/// `X-Client-Cert-Subject`; a client's own header of that name never does.
pub fn pass_subject_upstream(session: &mut pingora::proxy::Session) -> pingora::Result<()> {
    let subject = subject_of(session).map(str::to_string);
    session.req_header_mut().remove_header(SUBJECT_HEADER);
    if let Some(s) = subject {
        session.req_header_mut().insert_header(SUBJECT_HEADER, s)?;
    }
    Ok(())
}

/// The subject a listener verified for this request's connection, if any.
pub fn subject_of(session: &pingora::proxy::Session) -> Option<&str> {
    let digest = session.digest()?.ssl_digest.as_ref()?;
    digest
        .extension
        .get::<ClientSubject>()
        .map(|s| s.0.as_str())
}

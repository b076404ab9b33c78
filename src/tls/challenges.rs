//! What deskgate answers to an ACME server while an order is open: HTTP-01 key
//! authorizations under `/.well-known/acme-challenge/` (on plain listeners, before their
//! redirect) and TLS-ALPN-01 certificates (for a handshake offering `acme-tls/1`).

use once_cell::sync::Lazy;
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
pub const HTTP_PREFIX: &str = "/.well-known/acme-challenge/";

#[derive(Default)]
pub struct Challenges {
    http: RwLock<HashMap<String, String>>,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

pub static CHALLENGES: Lazy<Challenges> = Lazy::new(Challenges::default);

impl Challenges {
    pub fn put_http(&self, token: &str, key_authorization: &str) {
        self.http
            .write()
            .expect("challenges lock")
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove_http(&self, token: &str) {
        self.http.write().expect("challenges lock").remove(token);
    }

    /// The key authorization for `/.well-known/acme-challenge/<token>`, if one is pending.
    pub fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP_PREFIX)?;
        self.http
            .read()
            .expect("challenges lock")
            .get(token)
            .cloned()
    }

    pub fn put_alpn(&self, host: &str, cert: Arc<CertifiedKey>) {
        self.alpn
            .write()
            .expect("challenges lock")
            .insert(host.to_ascii_lowercase(), cert);
    }

    pub fn remove_alpn(&self, host: &str) {
        self.alpn
            .write()
            .expect("challenges lock")
            .remove(&host.to_ascii_lowercase());
    }

    pub fn alpn_cert(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let host = sni?.to_ascii_lowercase();
        self.alpn
            .read()
            .expect("challenges lock")
            .get(&host)
            .cloned()
    }
}

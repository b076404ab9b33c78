//! Error pages for requests deskgate cannot proxy: no route (404) and a failed upstream.
//!
//! By default deskgate's generic answer (`respond::error`: a page for browsers, text for
//! others, the request id, no internal name). Like configurable-http-proxy, an operator can
//! point `errors.target` at a server that renders them (`GET <target>/<code>?url=<request
//! URL>`, JupyterHub's `/hub/error/`), or `errors.path` at a folder of `<code>.html` /
//! `error.html`. Whatever fails on the way falls back to the generic answer, never to a
//! second error. Either way the answer carries `X-Request-Id`.

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::path::PathBuf;
use std::time::Duration;

/// The `url=` value is form-encoded (as URLSearchParams does in configurable-http-proxy):
/// everything but alphanumerics and `*-._` is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

#[derive(Clone, Debug, Default)]
pub struct ErrorPages {
    /// `http(s)://host:port/base/`: asked for `<base>/<code>?url=...`.
    pub target: Option<String>,
    /// A folder with `<code>.html` and/or `error.html`.
    pub dir: Option<PathBuf>,
    /// The status for a failed upstream instead of 502/504 (configurable-http-proxy: 503).
    pub upstream_status: Option<u16>,
}

impl ErrorPages {
    /// The status to answer for a failed upstream, given deskgate's own choice.
    pub fn upstream_failure(&self, status: u16) -> u16 {
        match (self.upstream_status, status) {
            (Some(s), 502 | 504) => s,
            _ => status,
        }
    }

    /// Sends the error page for `status`.
    pub async fn send(
        &self,
        session: &mut Session,
        status: u16,
        timeout: Duration,
    ) -> Result<bool> {
        match self.page(session, status, timeout).await {
            Some((content_type, page)) => {
                crate::edge::respond::body(session, status, &content_type, &page).await
            }
            None => crate::edge::respond::error(session, status).await,
        }
    }

    async fn page(
        &self,
        session: &Session,
        status: u16,
        timeout: Duration,
    ) -> Option<(String, Bytes)> {
        if let Some(target) = &self.target {
            let url = format!(
                "{}/{status}?url={}",
                target.trim_end_matches('/'),
                utf8_percent_encode(
                    &String::from_utf8_lossy(session.req_header().raw_path()),
                    QUERY_VALUE
                )
            );
            return match crate::upstream::client::get(&url, &[], None, timeout).await {
                Ok(answer) => {
                    let content_type = answer
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("text/html")
                        .to_string();
                    Some((content_type, answer.body.freeze()))
                }
                Err(e) => {
                    let id = crate::edge::request_id::of(session.req_header());
                    log::warn!("request {id}: error page {url}: {}", e.reason());
                    None
                }
            };
        }
        let dir = self.dir.as_ref()?;
        for name in [format!("{status}.html"), "error.html".to_string()] {
            if let Ok(body) = tokio::fs::read(dir.join(&name)).await {
                return Some(("text/html".into(), Bytes::from(body)));
            }
        }
        log::warn!(
            "error pages: neither {status}.html nor error.html in {}",
            dir.display()
        );
        None
    }
}

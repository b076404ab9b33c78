//! Small HTTP GETs to the hub (resolver lookups, access checks) over Pingora's own connector,
//! so they share its TLS backend and connection pool. Every call is bounded: `connect` to get
//! a connection and `connect` again for the answer, so a slow hub fails fast.

use crate::upstream::settings::{host_of, resolve, with_default_port, AddressError, UpstreamTls};
use bytes::BytesMut;
use http::{HeaderName, HeaderValue};
use once_cell::sync::Lazy;
use pingora::http::RequestHeader;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use std::time::Duration;

static CONNECTOR: Lazy<Connector> = Lazy::new(|| Connector::new(None));

/// Hub answers larger than this are not desktop lookups or auth decisions.
const MAX_BODY: usize = 64 * 1024;

pub struct HubResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: BytesMut,
}

/// Why a call to the hub got no answer (its status and reason go to the client).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("the hub did not answer in time")]
    Timeout,
    #[error("the hub is unreachable: {0}")]
    Url(#[from] UrlError),
    #[error("the hub is unreachable: {0}")]
    Address(#[from] AddressError),
    /// Pingora's error kind names what failed (`ConnectRefused`, `TLSHandshakeFailure`).
    #[error("the hub is unreachable: {}", .0.etype().as_str())]
    Failed(#[source] Box<pingora::Error>),
    #[error("the hub is unreachable: {0}")]
    Request(#[source] Box<pingora::Error>),
    #[error("the hub is unreachable: no response")]
    NoResponse,
    #[error("the hub is unreachable: answer larger than {MAX_BODY} bytes")]
    TooLarge,
}

impl HubError {
    /// 504 for a hub that is slow, 502 for one that is down or answers nonsense.
    pub fn status(&self) -> u16 {
        match self {
            HubError::Timeout => 504,
            _ => 502,
        }
    }
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// Why a hub URL (an access check, a resolver, `errors.target`, an ACME directory) is unusable.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("expected an http:// or https:// URL, found `{url}`")]
    Scheme { url: String },
    #[error(transparent)]
    Authority(#[from] AddressError),
}

/// A parsed `http(s)://host:port/path?query` URL to call.
pub struct HubUrl {
    pub tls: bool,
    pub authority: String,
    pub path_and_query: String,
}

pub fn parse_url(url: &str) -> Result<HubUrl, UrlError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(UrlError::Scheme {
            url: url.to_string(),
        });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = with_default_port(authority, if tls { 443 } else { 80 })?;
    Ok(HubUrl {
        tls,
        authority,
        path_and_query: path.to_string(),
    })
}

pub async fn get(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    tls: Option<&UpstreamTls>,
    timeout: Duration,
) -> Result<HubResponse, HubError> {
    let target = parse_url(url)?;
    let host = host_of(&target.authority).to_string();
    let addr = resolve(&target.authority).await?;
    let mut peer = HttpPeer::new(
        addr,
        target.tls,
        tls.map_or(host.clone(), |t| {
            if t.sni.is_empty() {
                host.clone()
            } else {
                t.sni.clone()
            }
        }),
    );
    peer.options.connection_timeout = Some(timeout);
    peer.options.total_connection_timeout = Some(timeout);
    peer.options.read_timeout = Some(timeout);
    peer.options.write_timeout = Some(timeout);
    peer.options.idle_timeout = Some(Duration::from_secs(30));
    if let Some(t) = tls {
        peer.options.verify_cert = t.verify;
        peer.options.verify_hostname = t.verify;
    }
    let work = async {
        let (mut session, _reused) = CONNECTOR.get_http_session(&peer).await.map_err(failed)?;
        let mut req = RequestHeader::build(
            "GET",
            target.path_and_query.as_bytes(),
            Some(headers.len() + 2),
        )
        .map_err(HubError::Request)?;
        let _ = req.insert_header(http::header::HOST, target.authority.as_str());
        for (k, v) in headers {
            let _ = req.append_header(k.clone(), v.clone());
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(failed)?;
        session.finish_request_body().await.map_err(failed)?;
        session.read_response_header().await.map_err(failed)?;
        let (status, resp_headers) = match session.response_header() {
            Some(h) => (h.status.as_u16(), h.headers.clone()),
            None => return Err(HubError::NoResponse),
        };
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(HubError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        CONNECTOR
            .release_http_session(session, &peer, Some(Duration::from_secs(30)))
            .await;
        Ok(HubResponse {
            status,
            headers: resp_headers,
            body,
        })
    };
    // Connect and answer each get `timeout`; the whole call is bounded by twice that.
    match tokio::time::timeout(timeout * 2, work).await {
        Ok(r) => r,
        Err(_) => Err(HubError::Timeout),
    }
}

fn failed(e: Box<pingora::Error>) -> HubError {
    use pingora::ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => HubError::Timeout,
        _ => HubError::Failed(e),
    }
}

/// Percent-encodes a captured value for use inside a URL path segment.
pub fn encode_segment(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

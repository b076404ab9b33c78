//! Access checks, nginx `auth_request` / Traefik `forwardAuth` style: before a request (or a
//! WebSocket upgrade) reaches a desktop, the hub is asked `GET <url with {name}>` with the
//! browser's `Cookie`/`Authorization`. 2xx lets it through (copying named headers such as
//! `X-User` to the upstream request); 401/403 answer that status or redirect to the login
//! page; anything else fails closed. Decisions are cached per (URL, credentials) for `cache`.
//! The check only decides (`AccessDecision`); the edge answers the browser.

use crate::config::AccessSpec;
use crate::routing::pattern::{Captures, Template};
use crate::routing::{AccessDecision, AccessGate};
use crate::support::single_flight::SingleFlightCache;
use crate::upstream::client::{self as hub_client, encode_segment};
use async_trait::async_trait;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

pub struct AccessCheck {
    url: Template,
    forward: Vec<HeaderName>,
    copy: Vec<HeaderName>,
    ttl: Duration,
    deny_redirect: Option<String>,
    timeout: Duration,
    cache: SingleFlightCache<HubAnswer>,
}

/// What the hub said, as cached.
#[derive(Clone)]
enum HubAnswer {
    Allow(Vec<(HeaderName, HeaderValue)>),
    Deny(u16),
    Unavailable(String),
}

/// Why an `auth:` block cannot become an access check.
#[derive(Debug, thiserror::Error)]
pub enum AccessCheckError {
    #[error(transparent)]
    Url(#[from] super::HubUrlError),
    #[error(transparent)]
    HeaderName(#[from] super::BadHeaderName),
}

impl AccessCheck {
    /// `captures` are the names the route captures; for runtime routes (`dynamic:`) the
    /// placeholders are filled from the route's data, so they are not checked here.
    pub fn new(
        spec: &AccessSpec,
        captures: Option<&[String]>,
        timeout: Duration,
    ) -> Result<AccessCheck, AccessCheckError> {
        let raw = spec;
        let url = super::url_template(&raw.url, captures, "auth")?;
        let names = |list: &[String]| -> Result<Vec<HeaderName>, super::BadHeaderName> {
            list.iter().map(|n| super::header_name(n)).collect()
        };
        Ok(AccessCheck {
            url,
            forward: names(&raw.forward)?,
            copy: names(&raw.copy)?,
            ttl: raw.cache,
            deny_redirect: raw.deny_redirect.clone(),
            timeout,
            cache: SingleFlightCache::new(100_000),
        })
    }

    async fn ask_hub(
        &self,
        url: String,
        forwarded: Vec<(HeaderName, HeaderValue)>,
    ) -> (HubAnswer, Duration) {
        match hub_client::get(&url, &forwarded, None, self.timeout).await {
            Ok(r) if (200..300).contains(&r.status) => {
                let copied = self
                    .copy
                    .iter()
                    .filter_map(|n| r.headers.get(n).map(|v| (n.clone(), v.clone())))
                    .collect();
                (HubAnswer::Allow(copied), self.ttl)
            }
            Ok(r) if r.status == 401 || r.status == 403 => (HubAnswer::Deny(r.status), self.ttl),
            Ok(r) => (
                HubAnswer::Unavailable(format!("{url} answered {}", r.status)),
                Duration::ZERO,
            ),
            Err(e) => (
                HubAnswer::Unavailable(format!("{url}: {}", e.reason())),
                Duration::ZERO,
            ),
        }
    }
}

#[async_trait]
impl AccessGate for AccessCheck {
    fn identity_headers(&self) -> &[HeaderName] {
        &self.copy
    }

    async fn decide(
        &self,
        headers: &HeaderMap,
        captures: &Captures,
        label: &str,
    ) -> AccessDecision {
        let Some(url) = self.url.fill(captures, encode_segment) else {
            log::warn!(
                "request {}: access check for route {label}: the route has no value for a placeholder in {}",
                request_id(headers),
                self.url
            );
            return AccessDecision::Deny(403);
        };
        let forwarded: Vec<(HeaderName, HeaderValue)> = self
            .forward
            .iter()
            .flat_map(|n| {
                headers
                    .get_all(n)
                    .iter()
                    .map(move |v| (n.clone(), v.clone()))
            })
            .collect();
        let mut key = url.clone();
        for (n, v) in &forwarded {
            key.push('\n');
            key.push_str(n.as_str());
            key.push(':');
            key.push_str(&String::from_utf8_lossy(v.as_bytes()));
        }
        let answer = self
            .cache
            .get_or_fetch(&key, || self.ask_hub(url.clone(), forwarded))
            .await;
        match answer {
            HubAnswer::Allow(headers) => AccessDecision::Allow(headers),
            HubAnswer::Deny(status) => {
                crate::telemetry::metrics::ACCESS_DENIED.inc();
                match &self.deny_redirect {
                    Some(location) => AccessDecision::RedirectToLogin(location.clone()),
                    None => AccessDecision::Deny(status),
                }
            }
            HubAnswer::Unavailable(reason) => {
                crate::telemetry::metrics::ACCESS_DENIED.inc();
                log::warn!(
                    "request {}: access check for route {label} failed closed: {reason}",
                    request_id(headers)
                );
                AccessDecision::Unavailable
            }
        }
    }
}

/// The request's id (`edge::request_id`, set before any check), for log lines.
fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(crate::edge::request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

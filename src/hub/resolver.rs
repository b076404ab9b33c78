//! Resolver routes (the hub's Apache RewriteMap / Kasm pattern): the desktop for a name is
//! asked of the hub, `GET <url with {name}>` with configured headers (an `X-API-Key` from the
//! environment), answered `{"target":"ip:port"}` or `null` / `{}` / 404 for "no desktop".
//! Answers are cached for `cache`, misses for at most 2 s, errors not at all; concurrent
//! first requests for one name make one call.

use crate::routing::pattern::{Captures, Template};
use crate::routing::{Resolution, UpstreamResolver};
use crate::support::secret::Secret;
use crate::support::single_flight::SingleFlightCache;
use crate::upstream::client::{self as hub_client, encode_segment};
use crate::upstream::settings::UpstreamTls;
use crate::upstream::Upstream;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use std::sync::Arc;
use std::time::Duration;

const MISS_TTL: Duration = Duration::from_secs(2);

pub struct Resolver {
    url: Template,
    headers: Vec<(HeaderName, HeaderValue)>,
    ttl: Duration,
    /// TLS toward the desktops it finds (bare `ip:port` targets).
    desktop_tls: Option<UpstreamTls>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    cache: SingleFlightCache<Resolution>,
}

/// Why a `resolve:` block cannot become a resolver.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error(transparent)]
    Url(#[from] super::HubUrlError),
    #[error(transparent)]
    HeaderName(#[from] super::BadHeaderName),
    #[error("the value of header {name} is not a valid header value")]
    HeaderValue {
        name: String,
        source: http::header::InvalidHeaderValue,
    },
}

/// Why a hub's `200` answer names no usable target.
#[derive(Debug, thiserror::Error)]
pub enum HubAnswerError {
    #[error("the hub's answer is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("the hub's answer is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the hub's target is not a string: {0}")]
    TargetNotString(serde_json::Value),
}

impl Resolver {
    pub fn new(
        url_template: &str,
        cache: Duration,
        headers: Vec<(String, Secret)>,
        tls: Option<UpstreamTls>,
        authorization: Option<HeaderValue>,
        captures: &[String],
        timeout: Duration,
    ) -> Result<Resolver, ResolverError> {
        let url = super::url_template(url_template, Some(captures), "resolver")?;
        let mut header_values = Vec::new();
        for (name, secret) in headers {
            let n = super::header_name(&name)?;
            let mut v = HeaderValue::from_str(secret.expose()).map_err(|source| {
                ResolverError::HeaderValue {
                    name: name.clone(),
                    source,
                }
            })?;
            v.set_sensitive(true);
            header_values.push((n, v));
        }
        Ok(Resolver {
            url,
            headers: header_values,
            ttl: cache,
            desktop_tls: tls,
            authorization,
            timeout,
            cache: SingleFlightCache::new(100_000),
        })
    }

    async fn ask_hub(&self, url: String, name: String) -> (Resolution, Duration) {
        match hub_client::get(&url, &self.headers, None, self.timeout).await {
            Err(e) => {
                log::warn!("resolver: {url}: {}", e.reason());
                (
                    Resolution::Failed {
                        status: e.status(),
                        reason: format!("{url}: {}", e.reason()),
                    },
                    Duration::ZERO,
                )
            }
            Ok(r) if r.status == 404 => (Resolution::NoDesktop(name), MISS_TTL.min(self.ttl)),
            Ok(r) if r.status == 200 => match parse_target(&r.body) {
                Ok(None) => (Resolution::NoDesktop(name), MISS_TTL.min(self.ttl)),
                Ok(Some(target)) => match Upstream::from_target(
                    &name,
                    &target,
                    self.desktop_tls.clone(),
                    self.authorization.clone(),
                ) {
                    Ok(u) => (Resolution::Found(Arc::new(u)), self.ttl),
                    Err(e) => (
                        Resolution::Failed {
                            status: 502,
                            reason: format!("the hub's target `{target}` is unusable: {e}"),
                        },
                        Duration::ZERO,
                    ),
                },
                Err(e) => (
                    Resolution::Failed {
                        status: 502,
                        reason: e.to_string(),
                    },
                    Duration::ZERO,
                ),
            },
            Ok(r) => (
                Resolution::Failed {
                    status: 502,
                    reason: format!("{url}: the hub answered {}", r.status),
                },
                Duration::ZERO,
            ),
        }
    }
}

#[async_trait]
impl UpstreamResolver for Resolver {
    async fn resolve(&self, captures: &Captures) -> Resolution {
        let Some(url) = self.url.fill(captures, encode_segment) else {
            return Resolution::Failed {
                status: 500,
                reason: "the route did not capture what the resolver URL needs".into(),
            };
        };
        let name = captures.get("name").unwrap_or(url.as_str()).to_string();
        self.cache
            .get_or_fetch(&url, || self.ask_hub(url.clone(), name))
            .await
    }
}

/// `{"target":"ip:port"}` -> Some; `null`, `{}`, `{"target": null}` or `NULL` -> None.
fn parse_target(body: &[u8]) -> Result<Option<String>, HubAnswerError> {
    let text = std::str::from_utf8(body)
        .map_err(HubAnswerError::NotUtf8)?
        .trim();
    if text.is_empty() || text.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(HubAnswerError::NotJson)?;
    match value.get("target") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(t)) if t.is_empty() => Ok(None),
        Some(serde_json::Value::String(t)) => Ok(Some(t.clone())),
        Some(other) => Err(HubAnswerError::TargetNotString(other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_target;
    #[test]
    fn hub_answers() {
        assert_eq!(
            parse_target(br#"{"target":"10.0.0.5:7001"}"#)
                .unwrap()
                .as_deref(),
            Some("10.0.0.5:7001")
        );
        assert_eq!(parse_target(b"NULL").unwrap(), None);
        assert_eq!(parse_target(b"null").unwrap(), None);
        assert_eq!(parse_target(b"{}").unwrap(), None);
        assert!(parse_target(b"<html>").is_err());
    }
}

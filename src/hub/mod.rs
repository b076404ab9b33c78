//! The hub integration: what a desktop hub (or JupyterHub) drives and asks.

pub mod access;
pub mod chp;
pub mod resolver;
pub mod route_store;
pub mod runtime_routes;

use crate::routing::Template;

/// Why a hub URL (an access check's `url:`, a resolver's `resolve:`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HubUrlError {
    #[error(transparent)]
    Template(#[from] crate::routing::PatternError),
    #[error("`{{{name}}}` in the {which} URL is not captured by this route's host or path")]
    Uncaptured { name: String, which: &'static str },
    #[error(transparent)]
    Url(#[from] crate::upstream::client::UrlError),
}

/// A hub URL with `{name}` placeholders: every placeholder one the route captures (when
/// `captures` is known: runtime routes fill them from their data), and a valid URL around them.
pub fn url_template(
    text: &str,
    captures: Option<&[String]>,
    which: &'static str,
) -> Result<Template, HubUrlError> {
    let url = Template::parse(text)?;
    if let Some(name) = captures.and_then(|c| url.uncaptured(c)) {
        return Err(HubUrlError::Uncaptured {
            name: name.to_string(),
            which,
        });
    }
    crate::upstream::client::parse_url(&text.replace(['{', '}'], ""))?;
    Ok(url)
}

/// A header name from a hub block's settings (an access check's `forward:`/`copy:`, a
/// resolver's `headers:`) that HTTP does not allow.
#[derive(Debug, thiserror::Error)]
#[error("`{name}` is not a valid header name")]
pub struct BadHeaderName {
    name: String,
    source: http::header::InvalidHeaderName,
}

/// `name` as a header name, or why it cannot be one.
pub fn header_name(name: &str) -> Result<http::HeaderName, BadHeaderName> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|source| BadHeaderName {
        name: name.to_string(),
        source,
    })
}

//! Resolver routes: the upstream of a desktop is asked of the hub per name.
use crate::config::raw::RawResolver;
use crate::config::Timeouts;
use crate::secret::Secret;
use crate::upstream::UpstreamTls;
use http::HeaderValue;

pub struct Resolver {
    pub url: crate::routes::Template,
}

impl Resolver {
    pub fn new(raw: &RawResolver, _headers: Vec<(String, Secret)>, _tls: Option<UpstreamTls>, _auth: Option<HeaderValue>, captures: &[String], _t: &Timeouts) -> Result<Resolver, String> {
        let url = crate::routes::Template::parse(&raw.resolve)?;
        if let Some(m) = url.capture_names().find(|c| !captures.iter().any(|k| k == c)) {
            return Err(format!("`{{{m}}}` in the resolver URL is not captured by this route"));
        }
        Ok(Resolver { url })
    }
}

pub enum Resolution {
    Found(std::sync::Arc<crate::upstream::Upstream>),
    NoDesktop(String),
    Failed { status: u16, reason: String },
}

impl Resolver {
    pub async fn resolve(&self, _caps: &crate::routes::Captures) -> Resolution {
        Resolution::Failed { status: 502, reason: "not implemented".into() }
    }
}

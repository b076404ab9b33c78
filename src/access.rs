//! Access checks (nginx auth_request / Traefik forwardAuth style).
use crate::config::raw::RawAuth;
use crate::config::Timeouts;

pub struct AccessCheck {
    pub url: crate::routes::Template,
}

impl AccessCheck {
    pub fn new(raw: &RawAuth, captures: &[String], _t: &Timeouts) -> Result<AccessCheck, String> {
        let url = crate::routes::Template::parse(&raw.url)?;
        if let Some(m) = url.capture_names().find(|c| !captures.iter().any(|k| k == c)) {
            return Err(format!("`{{{m}}}` in the auth URL is not captured by this route"));
        }
        Ok(AccessCheck { url })
    }
}

impl AccessCheck {
    /// `Some(true)` when a denial was answered; `None` to let the request through.
    pub async fn enforce(&self, _session: &mut pingora::proxy::Session, _caps: &crate::routes::Captures, _label: &str) -> pingora::Result<Option<bool>> {
        Ok(None)
    }
}

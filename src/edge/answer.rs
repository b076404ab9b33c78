//! What the request path decides when it does not forward: the answer deskgate gives itself,
//! as a value. Each step of `edge::proxy`'s `request_filter` returns one (or goes on), and
//! the phase sends it in one place, so the steps stay plain functions and the one await that
//! writes a response stays out of the common path's future.

use crate::edge::error_pages::ErrorPages;
use crate::edge::respond;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// An answer deskgate writes instead of forwarding the request.
pub enum Answer {
    /// `200` with a body of its own: the ACME HTTP-01 answer, configurable-http-proxy's health.
    Body {
        content_type: &'static str,
        body: Cow<'static, [u8]>,
    },
    Redirect {
        status: u16,
        location: String,
    },
    /// The generic error answer for the status, naming the request id (`respond::error`).
    Error(u16),
    /// The configured error page (`error_pages:`), with the generic answer as its fallback.
    ErrorPage {
        status: u16,
        pages: Arc<ErrorPages>,
        timeout: Duration,
    },
}

/// Where a step of the request path leaves the request.
pub enum Step<T = ()> {
    /// On to the next step, with what this one found.
    Next(T),
    /// Answered here: nothing is forwarded.
    Answer(Answer),
}

impl Answer {
    /// Writes it; `Ok(true)`, as Pingora's `request_filter` expects of an answered request.
    pub async fn send(self, session: &mut Session) -> Result<bool> {
        match self {
            Answer::Body { content_type, body } => {
                respond::body(session, 200, content_type, &body).await
            }
            Answer::Redirect { status, location } => {
                respond::redirect(session, status, &location).await
            }
            Answer::Error(status) => respond::error(session, status).await,
            Answer::ErrorPage {
                status,
                pages,
                timeout,
            } => pages.send(session, status, timeout).await,
        }
    }
}

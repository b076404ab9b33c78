//! Answers deskgate writes itself: error answers, redirects, short bodies.
//!
//! Every one carries the request's `X-Request-Id` (`edge::request_id`). Error answers say
//! what kind of failure happened and nothing more: no route, upstream or server name, no
//! address, no hub's answer; those go to the log line keyed by the same id. Browsers (`Accept`
//! with `text/html`) get a small HTML page, other clients two lines of text; operators can
//! have their own pages (`errors:`, `edge::error_pages`).

use crate::edge::request_id;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The generic error answer for `status`.
pub async fn error(session: &mut Session, status: u16) -> Result<bool> {
    let id = request_id::of(session.req_header());
    let (title, sentence) = wording(status);
    let wants_html = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .is_some_and(|a| a.as_bytes().windows(9).any(|w| w == b"text/html"));
    // The id is `A-Z a-z 0-9 . _ -` only (`request_id::well_formed`): safe in HTML as it is.
    let (content_type, page) = if wants_html {
        (
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <title>{status} {title}</title></head>\n<body><h1>{status} {title}</h1>\n\
                 <p>{sentence}</p>\n<p><small>Request id: <code>{id}</code></small></p>\
                 </body></html>\n"
            ),
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{status} {title}: {sentence}\nrequest id: {id}\n"),
        )
    };
    body(session, status, content_type, page.as_bytes()).await
}

/// The status's name and one sentence for the person who got it.
fn wording(status: u16) -> (&'static str, &'static str) {
    let title = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let sentence = match status {
        400 => "The request could not be understood.",
        401 => "Please sign in first.",
        403 => "Access to this page is not allowed.",
        404 => "There is nothing at this address.",
        405 => "This method is not allowed here.",
        429 => "Too many requests. Please try again shortly.",
        431 => "The request's headers are too large.",
        500 => "Something went wrong. Please try again shortly.",
        502 => "The service behind this address did not answer properly. Please try again shortly.",
        503 => "The service is unavailable right now. Please try again shortly.",
        501 => "This request is not supported.",
        504 => "The service behind this address did not answer in time. Please try again shortly.",
        _ => "The request could not be completed.",
    };
    (title, sentence)
}

/// A complete response; the connection is closed after it (errors may leave a request body
/// unread).
pub async fn body(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(5))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    request_id::put_on(session.req_header(), &mut resp)?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(body)), true)
        .await?;
    Ok(true)
}

pub async fn redirect(session: &mut Session, status: u16, location: &str) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
    request_id::put_on(session.req_header(), &mut resp)?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

pub fn https_location(host: &str, port: u16, path_and_query: &str) -> String {
    let host = if host.is_empty() { "localhost" } else { host };
    if port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{port}{path_and_query}")
    }
}

/// The status for a proxying error: 504 for timeouts, 502 for other upstream failures.
pub fn status_for_error(e: &Error) -> u16 {
    use pingora::ErrorType::*;
    match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            if e.esource() == &ErrorSource::Downstream {
                0
            } else {
                504
            }
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

//! Short answers deskgate writes itself: errors with a one-line text body, and redirects.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

pub async fn text(session: &mut Session, status: u16, body: &str) -> Result<bool> {
    self::body(
        session,
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
    )
    .await
}

/// A complete response; the connection is closed after it (errors may leave a request body
/// unread).
pub async fn body(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", content_type)?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::copy_from_slice(body)), true)
        .await?;
    Ok(true)
}

pub async fn redirect(session: &mut Session, status: u16, location: &str) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(3))?;
    resp.insert_header("location", location)?;
    resp.insert_header("content-length", "0")?;
    resp.insert_header("cache-control", "no-store")?;
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

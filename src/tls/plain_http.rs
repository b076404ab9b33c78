//! A plain HTTP request on a TLS port gets a readable `400` instead of a TLS alert, as nginx
//! ("The plain HTTP request was sent to HTTPS port") and Node answer it: clients and health
//! checks that forgot `https://` see why (vendored pingora-core patch 14). The first byte of
//! a TLS connection is a handshake record (0x16); anything else is not TLS.

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Peek;
use pingora::{Error, ErrorType, Result};
use tokio::io::AsyncWriteExt;

const TLS_HANDSHAKE_RECORD: u8 = 0x16;

const ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 47\r\nConnection: close\r\n\r\ndeskgate: this port speaks HTTPS; use https://\n";

pub struct PlainHttpOnTlsPort;

#[async_trait]
impl PreTlsProcess for PlainHttpOnTlsPort {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        let mut first = [0u8; 1];
        // Reads one byte and puts it back for the TLS handshake.
        if !stream.try_peek(&mut first).await.unwrap_or(false) {
            return Ok(());
        }
        if first[0] == TLS_HANDSHAKE_RECORD || !first[0].is_ascii_uppercase() {
            return Ok(());
        }
        let _ = stream.write_all(ANSWER).await;
        let _ = stream.flush().await;
        Error::e_explain(
            ErrorType::TLSHandshakeFailure,
            "not tls: a plain HTTP request on a TLS port (answered 400)",
        )
    }
}

//! `X-Request-Id`: one id per request, the thread that ties what a browser saw to the log.
//!
//! A client's own id is kept when it is well-formed: 1 to 128 characters of `A-Z a-z 0-9 . _ -`
//! (UUIDs, hex, base64url; what load balancers in front of deskgate send). Anything else
//! (empty, longer, other characters, the header given twice) is replaced, so the id is safe
//! to print in a page, a log line or a header. deskgate's own ids are a random per-process
//! prefix and a counter (`3f9a1c07b2e4-1a2b`): unique across restarts and edges, no
//! allocation but the header value itself.
//!
//! The id is set on the request first thing (`assign`), so it goes upstream with the request,
//! every answer deskgate writes carries it (`edge::respond`), proxied answers get it too, and
//! the access log and the error log lines name it.

use once_cell::sync::Lazy;
use pingora::http::RequestHeader;
use std::sync::atomic::{AtomicU64, Ordering};

pub const HEADER: &str = "x-request-id";
/// The header as written on requests and answers.
const WIRE_NAME: &str = "X-Request-Id";
const MAX_LEN: usize = 128;
const PREFIX_LEN: usize = 12;

static PREFIX: Lazy<[u8; PREFIX_LEN]> = Lazy::new(|| {
    use ring::rand::SecureRandom;
    let mut random = [0u8; PREFIX_LEN / 2];
    if ring::rand::SystemRandom::new().fill(&mut random).is_err() {
        // No system randomness: the time still tells processes apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        random.copy_from_slice(&nanos.to_le_bytes()[..PREFIX_LEN / 2]);
    }
    let mut hex = [0u8; PREFIX_LEN];
    for (i, b) in random.iter().enumerate() {
        hex[2 * i] = HEX[(b >> 4) as usize];
        hex[2 * i + 1] = HEX[(b & 0xF) as usize];
    }
    hex
});
static COUNTER: AtomicU64 = AtomicU64::new(1);
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether a client's id may be kept as it is.
pub fn well_formed(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A new id: the process's prefix, `-`, the counter in hex.
pub fn generate() -> http::HeaderValue {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; PREFIX_LEN + 1 + 16];
    buf[..PREFIX_LEN].copy_from_slice(&*PREFIX);
    buf[PREFIX_LEN] = b'-';
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    for i in 0..digits {
        let nibble = (n >> (4 * (digits - 1 - i))) & 0xF;
        buf[PREFIX_LEN + 1 + i] = HEX[nibble as usize];
    }
    http::HeaderValue::from_bytes(&buf[..PREFIX_LEN + 1 + digits]).expect("hex digits and a dash")
}

/// Keeps the client's well-formed id, or sets a new one.
pub fn assign(req: &mut RequestHeader) -> pingora::Result<()> {
    let mut given = req.headers.get_all(HEADER).iter();
    match (given.next(), given.next()) {
        (Some(id), None) if well_formed(id.as_bytes()) => Ok(()),
        _ => req.insert_header(WIRE_NAME, generate()),
    }
}

/// The request's id (after `assign`), `-` before.
pub fn of(req: &RequestHeader) -> &str {
    req.headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// The request's id as a header value, to put on an answer.
pub fn value(req: &RequestHeader) -> Option<http::HeaderValue> {
    req.headers.get(HEADER).cloned()
}

/// Sets it on an answer (replacing an upstream's own).
pub fn put_on(
    req: &RequestHeader,
    resp: &mut pingora::http::ResponseHeader,
) -> pingora::Result<()> {
    match value(req) {
        Some(id) => resp.insert_header(WIRE_NAME, id),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_only_when_well_formed() {
        assert!(well_formed(b"3f2a8c1e-7b4d-4e0a-9c1f-2d5e6a7b8c9d"));
        assert!(well_formed(b"a"));
        assert!(well_formed(&[b'x'; 128]));
        for bad in [
            &b""[..],
            &[b'x'; 129],
            b"a b",
            b"a<b>",
            b"a\"b",
            b"abc/def",
            b"\xc3\xa9",
        ] {
            assert!(!well_formed(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        for id in [&a, &b] {
            assert!(well_formed(id.as_bytes()), "{id:?}");
            assert_eq!(id.as_bytes()[PREFIX_LEN], b'-');
        }
        assert_eq!(a.as_bytes()[..PREFIX_LEN], b.as_bytes()[..PREFIX_LEN]);
    }

    #[test]
    fn assign_keeps_replaces_or_adds() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assign(&mut req).unwrap();
        let generated = of(&req).to_string();
        assert!(well_formed(generated.as_bytes()));
        assign(&mut req).unwrap();
        assert_eq!(of(&req), generated, "kept once assigned");

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Request-Id", "client-id.1").unwrap();
        assign(&mut req).unwrap();
        assert_eq!(of(&req), "client-id.1");

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Request-Id", "<script>").unwrap();
        assign(&mut req).unwrap();
        assert_ne!(of(&req), "<script>");
        assert!(well_formed(of(&req).as_bytes()));

        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Request-Id", "one").unwrap();
        req.append_header("X-Request-Id", "two").unwrap();
        assign(&mut req).unwrap();
        assert_eq!(req.headers.get_all(HEADER).iter().count(), 1);
        assert!(!["one", "two"].contains(&of(&req)));
    }
}

//! Requests another HTTP/1 parser could read differently from deskgate, refused before anything
//! routes on them (the first step of `request_filter`).
//!
//! Pingora's parser already refuses most ambiguous framing (differing `Content-Length`s,
//! `Transfer-Encoding` on HTTP/1.0 or without `chunked` last, obs-fold, a space before the
//! colon, duplicate `Host`, an absolute-form target naming another host). What it lets through,
//! RFC 9112's leniencies that `bench/smuggle.py` found nginx refusing, is refused here:
//!
//! - `Content-Length` and `Transfer-Encoding` together: Pingora drops the length and reads the
//!   chunks (RFC 9112 6.3), but that request is the CL.TE / TE.CL attack itself; no client needs
//!   it. Pingora has removed `Content-Length` by now, so the raw header section is read for it.
//! - `Transfer-Encoding` other than one `chunked`: `identity, chunked`, `gzip, chunked`,
//!   `chunked, chunked`, a second field. Pingora accepts any list ending in `chunked` and forwards
//!   the field as it came; an origin that does not know the coding reads a different body.
//! - `Content-Length` given twice or as a list (`5, 5`): Pingora reconciles equal values but
//!   forwards the field as it came, which a stricter origin refuses and a lenient one may misread.
//! - HTTP/1.1 without exactly one `Host`, or a `Host` that is no host[:port] (`a, b`, empty):
//!   routing and the origin's virtual host must see the same name.
//! - a request target that is neither origin-form (`/...`), absolute-form, nor `*` for OPTIONS:
//!   Pingora percent-encodes an illegal request line instead of refusing it (`GET  /x` becomes
//!   `%20/x`).
//! - methods outside upper-case letters, digits, `-` and `_` (`get` is another method than `GET`
//!   to an origin, and may be the same to a case-folding one), and `TRACE`, which would echo
//!   the headers deskgate adds upstream (a desktop's Basic credentials, `X-User`) to the browser.
//!
//! What this cannot see: bytes inside a chunked body (a bare LF in a chunk extension), which
//! Pingora parses after this phase and re-frames anyway (it re-chunks what it forwards).

use crate::edge::respond;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, Version};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Why a request is refused, and with what status.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// For the debug log; the client gets only the status text.
    pub reason: &'static str,
}

impl Refusal {
    const fn bad(reason: &'static str) -> Refusal {
        Refusal {
            status: 400,
            reason,
        }
    }
}

/// Answers and returns `Ok(true)` when the request must not go further.
pub async fn refuse_ambiguous(session: &mut Session) -> Result<bool> {
    let raw_header = session
        .as_downstream()
        .as_http1()
        .map(|h1| h1.get_headers_raw_bytes());
    let Some(refusal) = refusal(session.req_header(), raw_header.as_deref()) else {
        return Ok(false);
    };
    // debug, not warn: any client can send these, as often as it likes.
    log::debug!(
        "request {}: refused: {}",
        crate::edge::request_id::of(session.req_header()),
        refusal.reason
    );
    respond::error(session, refusal.status).await
}

/// The refusal for a request header, if any. `raw_header` is the HTTP/1 header section as it
/// arrived (`None` for HTTP/2, whose framing is not in fields).
pub fn refusal(req: &RequestHeader, raw_header: Option<&[u8]>) -> Option<Refusal> {
    method_refusal(&req.method).or_else(|| {
        let raw_header = raw_header?;
        if req.version > Version::HTTP_11 {
            return None;
        }
        framing_refusal(req, raw_header)
            .or_else(|| host_refusal(req))
            .or_else(|| target_refusal(req))
    })
}

fn method_refusal(method: &Method) -> Option<Refusal> {
    if *method == Method::TRACE {
        return Some(Refusal {
            status: 405,
            reason: "TRACE would echo the headers deskgate adds upstream",
        });
    }
    let plain = method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (!plain).then(|| Refusal::bad("method not in upper case"))
}

fn framing_refusal(req: &RequestHeader, raw_header: &[u8]) -> Option<Refusal> {
    let has_te = req.headers.contains_key(TRANSFER_ENCODING);
    if has_te && raw_field_present(raw_header, b"content-length") {
        return Some(Refusal::bad("both Content-Length and Transfer-Encoding"));
    }
    if has_te {
        return transfer_encoding_refusal(req);
    }
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (Some(_), Some(_)) => Some(Refusal::bad("Content-Length given twice")),
        (Some(v), None) if v.is_empty() || !v.as_bytes().iter().all(u8::is_ascii_digit) => {
            Some(Refusal::bad("Content-Length not one number"))
        }
        _ => None,
    }
}

/// Only a single `chunked` passes: RFC 9112 6.1 lets a server answer codings it does not
/// implement with 501, and applying `chunked` twice, or anything after it, is malformed.
fn transfer_encoding_refusal(req: &RequestHeader) -> Option<Refusal> {
    let mut fields = req.headers.get_all(TRANSFER_ENCODING).iter();
    let (Some(only), None) = (fields.next(), fields.next()) else {
        return Some(Refusal::bad("Transfer-Encoding given twice"));
    };
    let codings: Vec<&[u8]> = only
        .as_bytes()
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .collect();
    if codings
        .iter()
        .any(|c| c.is_empty() || !c.iter().all(|&b| is_tchar(b)))
    {
        return Some(Refusal::bad("Transfer-Encoding not a list of codings"));
    }
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    match codings.iter().filter(|c| chunked(c)).count() {
        1 if codings.len() == 1 => None,
        1 if codings.last().is_some_and(|c| chunked(c)) => Some(Refusal {
            status: 501,
            reason: "a transfer coding other than chunked",
        }),
        _ => Some(Refusal::bad("chunked not once and last")),
    }
}

fn host_refusal(req: &RequestHeader) -> Option<Refusal> {
    let mut hosts = req.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version == Version::HTTP_11 => Some(Refusal::bad("HTTP/1.1 without Host")),
        (Some(_), Some(_)) => Some(Refusal::bad("Host given twice")),
        (Some(host), None) if !is_host_and_port(host.as_bytes()) => {
            Some(Refusal::bad("Host is no host[:port]"))
        }
        _ => None,
    }
}

fn target_refusal(req: &RequestHeader) -> Option<Refusal> {
    let target = req.raw_path();
    let origin_form = target.first() == Some(&b'/');
    let asterisk = target == b"*" && req.method == Method::OPTIONS;
    let absolute =
        starts_with_ignore_case(target, b"http://") || starts_with_ignore_case(target, b"https://");
    // CONNECT (authority-form) is refused by Pingora itself.
    let allowed = origin_form || asterisk || absolute || req.method == Method::CONNECT;
    (!allowed).then(|| Refusal::bad("request target in no HTTP form"))
}

/// Whether a field of this (lower-case) name is in a raw HTTP/1 header section. Pingora's parser
/// accepted the section, so lines are `name:value` ending in LF or CRLF, names without spaces.
fn raw_field_present(raw_header: &[u8], name: &[u8]) -> bool {
    raw_header
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| line.iter().position(|&b| b == b':').map(|i| &line[..i]))
        .any(|field| field.eq_ignore_ascii_case(name))
}

/// A DNS name, IPv4 address or bracketed IPv6 address, with an optional port: no spaces, commas,
/// userinfo or paths a second parser could split differently.
fn is_host_and_port(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &value[1..end];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        (&value[..=end], &value[end + 1..])
    } else {
        let split = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let host = &value[..split];
        // RFC 3986 reg-name's unreserved characters and percent-encoding: clients on a Unix
        // socket (JupyterHub's aiohttp) send the socket's path percent-encoded as the host.
        let name_byte =
            |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%');
        if host.is_empty() || !host.iter().all(name_byte) {
            return false;
        }
        (host, &value[split..])
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            !digits.is_empty() && digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    };
    !host.is_empty() && port_ok
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, fields: &[(&str, &str)]) -> (RequestHeader, Vec<u8>) {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        let mut raw = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        (r, raw)
    }

    fn status(method: &str, target: &str, fields: &[(&str, &str)]) -> Option<u16> {
        let (r, raw) = req(method, target, fields);
        refusal(&r, Some(&raw)).map(|r| r.status)
    }

    const HOST: (&str, &str) = ("Host", "hub.test");

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(status("GET", "/", &[HOST]), None);
        assert_eq!(status("GET", "/", &[("Host", "hub.test:8443")]), None);
        assert_eq!(status("GET", "/", &[("Host", "[::1]:8443")]), None);
        assert_eq!(status("GET", "/", &[("Host", "127.0.0.1")]), None);
        assert_eq!(status("GET", "/", &[("Host", "%2ftmp%2fproxy.sock")]), None);
        assert_eq!(status("POST", "/", &[HOST, ("Content-Length", "5")]), None);
        let te = ("Transfer-Encoding", "Chunked");
        assert_eq!(status("POST", "/", &[HOST, te]), None);
        assert_eq!(status("OPTIONS", "*", &[HOST]), None);
        assert_eq!(status("GET", "http://hub.test/x", &[HOST]), None);
        assert_eq!(status("PROPFIND", "/dav", &[HOST]), None);
    }

    #[test]
    fn both_framings_are_refused_even_after_pingora_dropped_the_length() {
        // Pingora removes Content-Length when Transfer-Encoding is present; the raw header
        // still has it.
        let (mut r, raw) = req(
            "POST",
            "/",
            &[
                HOST,
                ("Content-Length", "6"),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        r.remove_header(&CONTENT_LENGTH);
        assert_eq!(refusal(&r, Some(&raw)).map(|r| r.status), Some(400));
        // A look-alike name is another field.
        let fields = [
            HOST,
            ("Content-Length-X", "6"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert_eq!(status("POST", "/", &fields), None);
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_are_refused() {
        let te = |v| status("POST", "/", &[HOST, ("Transfer-Encoding", v)]);
        assert_eq!(te("identity, chunked"), Some(501));
        assert_eq!(te("gzip, chunked"), Some(501));
        assert_eq!(te("chunked, chunked"), Some(400));
        assert_eq!(te(", chunked"), Some(400));
        assert_eq!(te("\"chunked\""), Some(400));
        let two = [
            HOST,
            ("Transfer-Encoding", "chunked"),
            ("Transfer-Encoding", "chunked"),
        ];
        assert_eq!(status("POST", "/", &two), Some(400));
    }

    #[test]
    fn content_length_must_be_one_number() {
        let cl = |v| status("POST", "/", &[HOST, ("Content-Length", v)]);
        assert_eq!(cl("5, 5"), Some(400));
        assert_eq!(cl("+5"), Some(400));
        assert_eq!(cl("005"), None);
        let two = [HOST, ("Content-Length", "5"), ("Content-Length", "5")];
        assert_eq!(status("POST", "/", &two), Some(400));
    }

    #[test]
    fn host_must_be_one_host_and_port() {
        assert_eq!(status("GET", "/", &[]), Some(400));
        for bad in [
            "", "a, b", "a b", "user@a", "a:", "a:99999x", "[zz]", "a/b", "[::1",
        ] {
            assert_eq!(status("GET", "/", &[("Host", bad)]), Some(400), "{bad:?}");
        }
        let (mut r, raw) = req("GET", "/", &[]);
        r.set_version(Version::HTTP_10);
        assert_eq!(refusal(&r, Some(&raw)), None, "HTTP/1.0 may omit Host");
    }

    #[test]
    fn targets_and_methods() {
        assert_eq!(status("GET", "%20/x", &[HOST]), Some(400));
        assert_eq!(status("GET", "*", &[HOST]), Some(400));
        assert_eq!(status("get", "/", &[HOST]), Some(400));
        assert_eq!(status("TRACE", "/", &[HOST]), Some(405));
    }

    #[test]
    fn http2_requests_skip_the_http1_checks() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.set_version(Version::HTTP_2);
        assert_eq!(refusal(&r, None), None);
    }
}

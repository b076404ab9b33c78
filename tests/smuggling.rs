//! Request smuggling: the core of `bench/smuggle.py` against the real binary, without nginx and
//! HAProxy. Each ambiguous request goes on its own raw TCP connection through deskgate to a
//! recording upstream written here, which answers the first request it reads with
//! `Connection: close` and then keeps every byte deskgate sends until deskgate closes. deskgate
//! must either refuse the request (nothing complete reaches the upstream) or forward exactly one
//! request, in unambiguous HTTP/1.1, with the body deskgate read.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: hub.test\r\n\r\n";
/// A generous bound for failure paths only; no assertion depends on timing.
const LIMIT: Duration = Duration::from_secs(10);

/// What deskgate must do with a request.
#[derive(Debug)]
enum Expect {
    /// Answer this status itself; no complete request reaches the upstream.
    Refuse(u16),
    /// Forward exactly one request with this body.
    Forward(&'static [u8]),
}
use Expect::*;

fn request(fields: &[&[u8]], body: &[u8]) -> Vec<u8> {
    request_line(b"POST /c HTTP/1.1", fields, body)
}

fn request_line(line: &[u8], fields: &[&[u8]], body: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    out.extend_from_slice(b"\r\nHost: hub.test\r\n");
    for f in fields {
        out.extend_from_slice(f);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let zero_then_request = [b"0\r\n\r\n".as_slice(), SMUGGLED].concat();
    let cl_all = format!("Content-Length: {}", zero_then_request.len());
    let chunk_holding_request = [
        format!("{:x}\r\n", SMUGGLED.len()).as_bytes(),
        SMUGGLED,
        b"\r\n0\r\n\r\n",
    ]
    .concat();
    let te = b"Transfer-Encoding: chunked".as_slice();
    vec![
        // Controls.
        (
            "content-length",
            request(&[b"Content-Length: 5"], b"hello"),
            Forward(b"hello"),
        ),
        (
            "chunked",
            request(&[te], b"5\r\nhello\r\n0\r\n\r\n"),
            Forward(b"hello"),
        ),
        // Both framings (refused by request_checks: Pingora itself would read the chunks).
        (
            "CL.TE",
            request(&[cl_all.as_bytes(), te], &zero_then_request),
            Refuse(400),
        ),
        (
            "TE.CL",
            request(&[te, b"Content-Length: 4"], &chunk_holding_request),
            Refuse(400),
        ),
        (
            "TE.CL with CL 0",
            request(&[te, b"Content-Length: 0"], &chunk_holding_request),
            Refuse(400),
        ),
        (
            "CL with xchunked",
            request(
                &[cl_all.as_bytes(), b"Transfer-Encoding: xchunked"],
                &zero_then_request,
            ),
            Refuse(400),
        ),
        // Transfer-Encoding other than one chunked (request_checks).
        (
            "identity, chunked",
            request(
                &[b"Transfer-Encoding: identity, chunked"],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Refuse(501),
        ),
        (
            "gzip, chunked",
            request(
                &[b"Transfer-Encoding: gzip, chunked"],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Refuse(501),
        ),
        (
            "chunked, chunked",
            request(
                &[b"Transfer-Encoding: chunked, chunked"],
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
            Refuse(400),
        ),
        (
            "two TE fields",
            request(&[te, te], b"5\r\nhello\r\n0\r\n\r\n"),
            Refuse(400),
        ),
        // Refused by Pingora's parser.
        (
            "TE on obs-fold",
            request(
                &[cl_all.as_bytes(), b"Transfer-Encoding:\r\n chunked"],
                &zero_then_request,
            ),
            Refuse(400),
        ),
        (
            "space before colon",
            request(
                &[cl_all.as_bytes(), b"Transfer-Encoding : chunked"],
                &zero_then_request,
            ),
            Refuse(400),
        ),
        (
            "TE on HTTP/1.0",
            request_line(
                b"POST /c HTTP/1.0",
                &[cl_all.as_bytes(), te],
                &zero_then_request,
            ),
            Refuse(400),
        ),
        (
            "bare CR before TE",
            request(
                &[b"X-A: a\rTransfer-Encoding: chunked", cl_all.as_bytes()],
                &zero_then_request,
            ),
            Refuse(400),
        ),
        (
            "differing Content-Lengths",
            request(&[b"Content-Length: 5", b"Content-Length: 6"], b"helloG"),
            Refuse(400),
        ),
        // One header field longer than Apache's LimitRequestFieldSize (nginx's 8 KiB buffers
        // refuse it too): refused, though the whole header is within max_header_bytes.
        (
            "a 9 KiB header field",
            request_line(
                b"GET /c HTTP/1.1",
                &[format!("X-Long: {}", "a".repeat(9 * 1024)).as_bytes()],
                b"",
            ),
            Refuse(431),
        ),
        // A bare LF or CR inside a chunk extension: a peer that ends the line there reads
        // the rest as data (vendored pingora-core 19).
        (
            "bare LF in a chunk extension",
            request(&[te], b"5;a\nxx\r\nhello\r\n0\r\n\r\n"),
            Refuse(400),
        ),
        (
            "bare CR in a chunk extension",
            request(&[te], b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
            Refuse(400),
        ),
        (
            "chunk size overflow",
            request(
                &[te],
                &[
                    b"10000000000000005\r\nhello\r\n0\r\n\r\n".as_slice(),
                    SMUGGLED,
                ]
                .concat(),
            ),
            Refuse(400),
        ),
        (
            "negative chunk size",
            request(&[te], b"-5\r\nhello\r\n0\r\n\r\n"),
            Refuse(400),
        ),
        // Content-Length duplicates Pingora reconciles but would forward as they came.
        (
            "Content-Length twice",
            request(&[b"Content-Length: 5", b"Content-Length: 5"], b"hello"),
            Refuse(400),
        ),
        (
            "Content-Length 5, 5",
            request(&[b"Content-Length: 5, 5"], b"hello"),
            Refuse(400),
        ),
        // Host and request line (request_checks).
        ("no Host", b"GET /c HTTP/1.1\r\n\r\n".to_vec(), Refuse(400)),
        (
            "Host a, b",
            b"GET /c HTTP/1.1\r\nHost: hub.test, evil.test\r\n\r\n".to_vec(),
            Refuse(400),
        ),
        (
            "empty Host",
            b"GET /c HTTP/1.1\r\nHost: \r\n\r\n".to_vec(),
            Refuse(400),
        ),
        (
            "absolute form, no Host",
            b"GET http://evil.test/c HTTP/1.1\r\n\r\n".to_vec(),
            Refuse(400),
        ),
        (
            "two spaces after the method",
            b"GET  /c HTTP/1.1\r\nHost: hub.test\r\n\r\n".to_vec(),
            Refuse(400),
        ),
        (
            "lower-case method",
            request_line(b"get /c HTTP/1.1", &[], b""),
            Refuse(400),
        ),
        (
            "TRACE",
            request_line(b"TRACE /c HTTP/1.1", &[], b""),
            Refuse(405),
        ),
        // Bytes a request target cannot hold: refused, not percent-encoded into a request the
        // client never sent (vendored pingora-core 18).
        (
            "space in the target",
            request_line(b"GET /c d HTTP/1.1", &[], b""),
            Refuse(400),
        ),
        (
            "NUL in the target",
            request_line(b"GET /c\0d HTTP/1.1", &[], b""),
            Refuse(400),
        ),
        (
            "CR in the target",
            request_line(b"GET /c\rX HTTP/1.1", &[], b""),
            Refuse(400),
        ),
        // A request after the body is the next request of this client, never part of the first.
        (
            "request after a Content-Length body",
            request(
                &[b"Content-Length: 5"],
                &[b"hello".as_slice(), SMUGGLED].concat(),
            ),
            Forward(b"hello"),
        ),
        (
            "request after a chunked body",
            request(
                &[te],
                &[b"5\r\nhello\r\n0\r\n\r\n".as_slice(), SMUGGLED].concat(),
            ),
            Forward(b"hello"),
        ),
    ]
}

/// One connection's bytes as the recording upstream saw them, complete once deskgate closed it;
/// `seq` counts connections in the order they were accepted.
struct Recorded {
    seq: usize,
    bytes: Vec<u8>,
}

/// Accepts on a loopback port; per connection, answers the first complete request (read
/// strictly) with `200` and `Connection: close`, then records until EOF.
fn recording_upstream() -> (u16, mpsc::Receiver<Recorded>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (seq, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(LIMIT)).unwrap();
                let (mut bytes, mut answered, mut buf) = (Vec::new(), false, [0u8; 65536]);
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    bytes.extend_from_slice(&buf[..n]);
                    if !answered && matches!(parse_strict(&bytes), Ok(Some(_))) {
                        answered = true;
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                        );
                    }
                }
                let _ = tx.send(Recorded { seq, bytes });
            });
        }
    });
    (port, rx)
}

/// A request as RFC 9112 frames it, with none of its leniencies: `Ok(None)` while incomplete,
/// `Ok(Some((target, body, length)))` once complete, `Err` for anything another parser could
/// read differently.
fn parse_strict(b: &[u8]) -> Result<Option<(String, Vec<u8>, usize)>, String> {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&b[..end]).map_err(|_| "header not UTF-8")?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap();
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 3 || parts[2] != "HTTP/1.1" || !parts[1].starts_with('/') {
        return Err(format!("request line {line:?}"));
    }
    let (mut hosts, mut lengths, mut codings) = (0, Vec::new(), Vec::new());
    for l in lines {
        if l.contains('\r') || l.contains('\n') || l.starts_with([' ', '\t']) {
            return Err(format!("field line {l:?}"));
        }
        let (name, value) = l.split_once(':').ok_or(format!("no colon: {l:?}"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(format!("field name {name:?}"));
        }
        match name.to_ascii_lowercase().as_str() {
            "host" => hosts += 1,
            "content-length" => lengths.push(value.trim().to_string()),
            "transfer-encoding" => codings.push(value.trim().to_string()),
            _ => {}
        }
    }
    if hosts != 1 {
        return Err(format!("{hosts} Host fields"));
    }
    let mut pos = end + 4;
    let body = match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Vec::new(),
        ([n], []) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            let n: usize = n.parse().map_err(|_| "length")?;
            if b.len() < pos + n {
                return Ok(None);
            }
            pos += n;
            b[pos - n..pos].to_vec()
        }
        ([], [c]) if c.eq_ignore_ascii_case("chunked") => {
            let mut body = Vec::new();
            loop {
                let Some(eol) = b[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let size_line = std::str::from_utf8(&b[pos..pos + eol]).map_err(|_| "size")?;
                if size_line.is_empty()
                    || size_line.len() > 16
                    || !size_line.bytes().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(format!("chunk size line {size_line:?}"));
                }
                let size = usize::from_str_radix(size_line, 16).unwrap();
                pos += eol + 2;
                if size == 0 {
                    if b.len() < pos + 2 {
                        return Ok(None);
                    }
                    if &b[pos..pos + 2] != b"\r\n" {
                        return Err("trailer fields".into());
                    }
                    pos += 2;
                    break body;
                }
                if b.len() < pos + size + 2 {
                    return Ok(None);
                }
                body.extend_from_slice(&b[pos..pos + size]);
                if &b[pos + size..pos + size + 2] != b"\r\n" {
                    return Err("chunk data without CRLF".into());
                }
                pos += size + 2;
            }
        }
        _ => return Err(format!("framing: lengths {lengths:?}, codings {codings:?}")),
    };
    Ok(Some((parts[1].to_string(), body, pos)))
}

/// Sends `bytes` on a fresh connection and reads one response (or until deskgate closes).
fn exchange(port: u16, bytes: &[u8]) -> (Option<u16>, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(LIMIT)).unwrap();
    // deskgate may refuse and close before reading everything: a failed write is an answer too.
    let _ = c.write_all(bytes);
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|n| got.len() >= end + 4 + n) {
                break;
            }
        }
        match c.read(&mut buf) {
            Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let status = std::str::from_utf8(got.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok());
    (status, got)
}

#[test]
fn ambiguous_requests_are_refused_or_forwarded_as_exactly_one_request() {
    let fx = Fixture::new();
    let (up_port, recorded) = recording_upstream();
    let port = free_port();
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:{port}"
upstreams:
  up: {{ servers: ["127.0.0.1:{up_port}"] }}
routes:
  - {{ path: "/", upstream: up }}
"#
    );
    let _edge = Deskgate::start(fx.path(), "smuggling", &yaml, port);
    let (mut failures, mut seen, mut next_seq) = (Vec::new(), BTreeMap::new(), 0);
    for (i, (name, bytes, expect)) in cases().into_iter().enumerate() {
        let (status, answer) = exchange(port, &bytes);
        // A well-formed request after each case: the upstream accepted every connection the
        // case opened before the canary's, so once those are recorded the case is complete.
        let canary = format!("GET /canary-{i} HTTP/1.1\r\nHost: hub.test\r\n\r\n");
        assert_eq!(
            exchange(port, canary.as_bytes()).0,
            Some(200),
            "{name}: canary"
        );
        let first_line = canary.split("\r\n").next().unwrap().as_bytes();
        let canary_seq = loop {
            let r = recorded
                .recv_timeout(LIMIT)
                .expect("upstream recorded the canary");
            if r.bytes.starts_with(first_line) {
                break r.seq;
            }
            seen.insert(r.seq, r.bytes);
        };
        while (next_seq..canary_seq).any(|s| !seen.contains_key(&s)) {
            let r = recorded
                .recv_timeout(LIMIT)
                .expect("upstream recorded the case");
            seen.insert(r.seq, r.bytes);
        }
        let case_conns: Vec<Vec<u8>> = (next_seq..canary_seq)
            .filter_map(|s| seen.remove(&s))
            .collect();
        next_seq = canary_seq + 1;
        let parsed: Vec<_> = case_conns.iter().map(|b| (b, parse_strict(b))).collect();
        let complete: Vec<_> = parsed
            .iter()
            .filter_map(|(b, p)| match p {
                Ok(Some(req)) => Some((b, req.clone())),
                _ => None,
            })
            .collect();
        let verdict = match &expect {
            Refuse(code) => {
                if status != Some(*code) || !complete.is_empty() {
                    Err(format!("expected {code} and nothing complete upstream"))
                } else {
                    Ok(())
                }
            }
            Forward(body) => match complete.as_slice() {
                [(bytes, (_, got_body, len))] if case_conns.len() == 1 && status == Some(200) => {
                    if got_body.as_slice() != *body {
                        Err(format!("body {:?}", String::from_utf8_lossy(got_body)))
                    } else if *len != bytes.len() {
                        Err(format!(
                            "{} bytes after the request upstream",
                            bytes.len() - len
                        ))
                    } else {
                        Ok(())
                    }
                }
                _ => Err("expected one complete request on one connection".into()),
            },
        };
        let ambiguous: Vec<_> = parsed
            .iter()
            .filter_map(|(_, p)| p.as_ref().err())
            .collect();
        if let Err(why) = verdict.and_then(|()| match ambiguous.as_slice() {
            [] => Ok(()),
            e => Err(format!("ambiguous upstream bytes: {e:?}")),
        }) {
            failures.push(format!(
                "{name}: {why}; client got {status:?} {:?}; upstream: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(120)]),
                case_conns
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refused_answers_name_nothing_internal() {
    let fx = Fixture::new();
    let (up_port, _recorded) = recording_upstream();
    let port = free_port();
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:{port}"
upstreams:
  secret-desktop-upstream: {{ servers: ["127.0.0.1:{up_port}"] }}
routes:
  - {{ path: "/", upstream: secret-desktop-upstream }}
"#
    );
    let _edge = Deskgate::start(fx.path(), "refused", &yaml, port);
    for bytes in [
        request(
            &[b"Content-Length: 5", b"Transfer-Encoding: chunked"],
            b"0\r\n\r\n",
        ),
        request(&[b"Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n"),
        request_line(b"TRACE / HTTP/1.1", &[], b""),
    ] {
        let (status, answer) = exchange(port, &bytes);
        let text = String::from_utf8_lossy(&answer);
        assert!(matches!(status, Some(400 | 405 | 501)), "{text}");
        assert!(
            !text.contains("secret") && !text.contains("127.0.0.1"),
            "{text}"
        );
    }
}

//! Plain HTTP through deskgate: routing rules, rewriting, errors, redirects, with curl.

mod common;
use common::*;

struct Edge {
    fx: Fixture,
    edge: Deskgate,
    http_port: u16,
}

fn edge() -> Edge {
    let fx = Fixture::new();
    let (https_port, http_port) = (free_port(), free_port());
    let hub = fx.desktop("hub");
    let alice = fx.desktop("alice");
    let special = fx.desktop("special");
    // Accepts TCP but never answers TLS: deskgate must give up after `connect`, not hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::mem::forget(silent);
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:{http_port}"
    redirect_https: true
{tls}upstreams:
{hub}{alice}{special}  desktop-down:
    servers: ["127.0.0.1:{down}"]
    tls: {{ verify: false }}
    retries: 2
  desktop-silent:
    servers: ["{silent_addr}"]
    tls: {{ verify: false }}
  desktop-nxdomain:
    servers: ["no-such-desktop.invalid:7001"]
    tls: {{ verify: false }}
routes:
  - host: hub.test
    upstream: hub
  - path: "/desktop/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    block: ["/api/"]
  - path: "/desktop/special/"
    upstream: desktop-special
timeouts: {{ connect: 1s, read: 5s }}
"#,
        tls = fx.tls_listener(https_port),
        hub = fx.desktop_upstream("hub", hub),
        alice = fx.desktop_upstream("desktop-alice", alice),
        special = fx.desktop_upstream("desktop-special", special),
        down = free_port(),
    );
    let edge = Deskgate::start(fx.path(), "edge", &yaml, https_port);
    Edge {
        fx,
        edge,
        http_port,
    }
}

#[test]
fn routes_by_host_path_and_longest_prefix() {
    let e = edge();
    let p = e.edge.https_port;
    let r = curl(&format!("https://hub.test:{p}/whoami"), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "hub\n"));

    // strip_prefix: the desktop sees /whoami.
    let r = curl(&format!("https://other.test:{p}/desktop/alice/whoami"), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));

    // The literal /desktop/special/ beats /desktop/{name}/ and keeps its prefix.
    let r = curl(
        &format!("https://other.test:{p}/desktop/special/whoami"),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-desktop").as_deref(), Some("special"));
    assert!(
        r.body.contains("path: <code>/desktop/special/whoami"),
        "{}",
        r.body
    );

    // Query strings survive the rewrite; dot segments cannot climb out of a prefix.
    let r = curl(
        &format!("https://other.test:{p}/desktop/alice/page?x=1&y=2"),
        &[],
    );
    assert!(
        r.body.contains("path: <code>/page?x=1&amp;y=2")
            || r.body.contains("path: <code>/page?x=1&y=2"),
        "{}",
        r.body
    );
    let r = curl(
        &format!("https://other.test:{p}/desktop/alice/%2e%2e/special/whoami"),
        &["--path-as-is"],
    );
    assert_eq!(
        r.header("x-desktop").as_deref(),
        Some("special"),
        "{}",
        r.headers
    );
}

#[test]
fn answers_404_403_502_504_with_short_bodies() {
    let e = edge();
    let p = e.edge.https_port;
    let r = curl(&format!("https://other.test:{p}/nothing-here"), &[]);
    assert_eq!(r.status, 404);
    let id = r.header("x-request-id").expect("an X-Request-Id");
    assert_eq!(
        r.body,
        format!("404 Not Found: There is nothing at this address.\nrequest id: {id}\n")
    );

    let r = curl(&format!("https://other.test:{p}/desktop/nobody/"), &[]);
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("nobody"), "{}", r.body);

    let r = curl(
        &format!("https://other.test:{p}/desktop/alice/api/v1/users"),
        &[],
    );
    assert_eq!(r.status, 403);
    let r = curl(
        &format!("https://other.test:{p}/desktop/alice//api/x"),
        &["--path-as-is"],
    );
    assert_eq!(r.status, 403, "a doubled slash must not dodge `block`");

    let r = curl(&format!("https://other.test:{p}/desktop/down/"), &[]);
    assert_eq!(r.status, 502);
    assert!(r.body.starts_with("502 Bad Gateway: "), "{}", r.body);
    assert!(!r.body.contains("desktop-down"), "{}", r.body);

    // A name that does not resolve is a 502 for that request, not a crash.
    let r = curl(&format!("https://other.test:{p}/desktop/nxdomain/"), &[]);
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        curl(&format!("https://hub.test:{p}/whoami"), &[]).status,
        200
    );

    // No hang: a client that gives up after 15 s would see status 0, not 504.
    let r = curl(
        &format!("https://other.test:{p}/desktop/silent/"),
        &["--max-time", "15"],
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.contains("did not answer in time"), "{}", r.body);
}

#[test]
fn basic_auth_reaches_desktop_and_forwarding_headers_are_set() {
    let e = edge();
    let p = e.edge.https_port;
    let r = curl(
        &format!("https://other.test:{p}/desktop/alice/headers"),
        &[
            "--http1.1",
            "-H",
            "Authorization: Bearer from-browser",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: 1",
            // Hop-by-hop by definition (Pingora strips these, deskgate too for most; vendored
            // pingora-proxy patch 22 looks for them in one pass), next to one that is not.
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Authorization: Basic cHJveHk6c2VjcmV0",
            "-H",
            "TE: trailers",
            "-H",
            "HTTP2-Settings: AAMAAABkAAQAAP__",
            "-H",
            "X-Keep-Alive-Like: 1",
        ],
    );
    assert_eq!(
        r.status, 200,
        "the desktop demands Basic auth; deskgate must inject it"
    );
    let expected = format!(
        "authorization: Basic {}",
        base64_encode(&format!("{DESKTOP_USER}:{DESKTOP_PASSWORD}"))
    );
    assert!(r.body.contains(&expected), "{}", r.body);
    assert!(!r.body.contains("from-browser"));
    assert!(
        !r.body.contains("x-hop"),
        "hop-by-hop header named in Connection must go: {}",
        r.body
    );
    for gone in [
        "keep-alive:",
        "proxy-authorization:",
        "te:",
        "http2-settings:",
    ] {
        assert!(
            !r.body.lines().any(|l| l.starts_with(gone)),
            "hop-by-hop `{gone}` must go: {}",
            r.body
        );
    }
    assert!(r.body.contains("x-keep-alive-like: 1"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-for: 127.0.0.1"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-proto: https"), "{}", r.body);
    assert!(
        r.body
            .contains(&format!("x-forwarded-host: other.test:{p}")),
        "{}",
        r.body
    );

    let r = curl(
        &format!("https://other.test:{p}/desktop/alice/headers"),
        &["--http2"],
    );
    assert!(
        r.body.contains(&format!("host: other.test:{p}")),
        "HTTP/2 :authority becomes Host: {}",
        r.body
    );

    let log = e.edge.log_text();
    assert!(
        !log.contains(DESKTOP_PASSWORD),
        "password leaked into the log"
    );
    assert!(!log.contains(&base64_encode(&format!(
        "{DESKTOP_USER}:{DESKTOP_PASSWORD}"
    ))));
}

#[test]
fn http2_downstream_and_https_redirect() {
    let e = edge();
    let p = e.edge.https_port;
    let r = curl(&format!("https://hub.test:{p}/whoami"), &["--http2"]);
    assert!(r.headers.starts_with("HTTP/2 200"), "{}", r.headers);
    assert_eq!(r.body, "hub\n");

    let r = curl(&format!("http://hub.test:{}/x?y=1", e.http_port), &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("https://hub.test:{p}/x?y=1").as_str())
    );
    drop(e.fx);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Header read buffers start at 1 KiB (vendored pingora-core patch 7): larger request and
/// response headers must still pass whole, on a kept-alive connection too.
#[test]
fn large_headers_pass_both_ways_on_a_kept_alive_connection() {
    let e = edge();
    let p = e.edge.https_port;
    let cookie = format!("session={}", "c".repeat(6000));
    let echo = "e".repeat(3000);
    let mut args: Vec<String> = vec![
        "--http1.1".into(),
        "-H".into(),
        format!("Cookie: {cookie}"),
        "-H".into(),
        format!("X-Echo: {echo}"),
    ];
    for i in 0..40 {
        args.push("-H".into());
        args.push(format!("X-Filler-{i}: {}", "f".repeat(20)));
    }
    let url = format!("https://other.test:{p}/desktop/alice/headers");
    // the same URL twice: curl keeps the connection, so the second request is read after the
    // first on the same downstream and upstream connections
    args.push(url.clone());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(&url, &refs);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body.matches(&format!("cookie: {cookie}\n")).count(),
        2,
        "both requests carry the whole cookie"
    );
    assert_eq!(r.body.matches("x-filler-39: ").count(), 2);
    assert_eq!(r.header("x-echo").as_deref(), Some(echo.as_str()));
}

/// Response bodies of every size, one after another on kept-alive connections (both legs): a
/// body that came whole with its header (vendored pingora-core patch 21 keeps it in a buffer
/// of its size) and bodies read over many reads, around the 64 KiB read buffer's size.
#[test]
fn small_and_large_bodies_alternate_on_kept_alive_connections() {
    let e = edge();
    let p = e.edge.https_port;
    let sizes = [5, 3 << 20, 7, 65_535, 65_536, 65_537, 1, 200_000, 12];
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-k", "--http1.1", "--max-time", "60"])
        .args(["--resolve", &format!("other.test:{p}:127.0.0.1")])
        .args(["-w", "%{http_code} %{size_download} %{num_connects}\n"]);
    for n in sizes {
        cmd.args(["-o", "/dev/null"])
            .arg(format!("https://other.test:{p}/desktop/alice/bytes/{n}"));
    }
    let out = cmd.output().expect("curl is installed");
    let lines = String::from_utf8(out.stdout).unwrap();
    let got: Vec<&str> = lines.lines().collect();
    let want: Vec<String> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("200 {n} {}", u8::from(i == 0)))
        .collect();
    assert_eq!(got, want, "status, body size, new connections per request");
    assert!(
        !e.edge.log_text().contains("Peer sent more data"),
        "{}",
        e.edge.log_text()
    );
}

/// The request target reaches the upstream byte for byte, `|{}[]` and raw UTF-8 included
/// (vendored pingora-proxy patch 18 builds the upstream request from the request's parts, not
/// as a copy of it). Sent by hand: curl would percent-encode the UTF-8.
#[test]
fn request_target_reaches_the_upstream_byte_for_byte() {
    use std::io::{Read, Write};
    let e = edge();
    for target in [
        "/desktop/special/a%2Fb/c?x=1&y=%7C",
        "/desktop/special/p|q{1}/\u{e9}t\u{e9}?z=[2]",
    ] {
        let mut tls = tls_to(e.edge.https_port, "other.test");
        write!(
            tls,
            "GET {target} HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer); // the edge may end without close_notify
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        assert!(
            answer.contains(&format!("path: <code>{target}</code>")),
            "{target}: {answer}"
        );
    }
}

/// A TLS connection to 127.0.0.1:`port` for `host`, to send requests by hand.
fn tls_to(
    port: u16,
    host: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let config = client_tls(std::sync::Arc::new(RecordingVerifier::default()));
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Requests without a body are answered in turn, the others through Pingora's duplex
/// (pingora-proxy patch 20): a GET, a POST with a body and a GET on one kept-alive connection
/// are each answered whole, with their own path, and the connection stays usable between them.
#[test]
fn requests_with_and_without_bodies_share_a_kept_alive_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let e = edge();
    let mut tls = BufReader::new(tls_to(e.edge.https_port, "other.test"));
    for (path, body) in [("one", ""), ("two", "hello"), ("three", "")] {
        let head = if body.is_empty() {
            format!("GET /desktop/special/{path} HTTP/1.1\r\nHost: other.test\r\n\r\n")
        } else {
            format!(
                "POST /desktop/special/{path} HTTP/1.1\r\nHost: other.test\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        tls.get_mut().write_all(head.as_bytes()).unwrap();
        let mut status = String::new();
        tls.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
        let mut length = 0;
        loop {
            let mut line = String::new();
            tls.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut page = vec![0; length];
        tls.read_exact(&mut page).unwrap();
        let page = String::from_utf8_lossy(&page);
        assert!(
            page.contains(&format!("path: <code>/desktop/special/{path}</code>")),
            "{path}: {page}"
        );
    }
}

/// The listener picks the cipher suite by deskgate's order (AES-128-GCM first), not by the
/// client's: rustls and OpenSSL clients list AES-256-GCM-SHA384 first, which costs a SHA-384
/// key schedule per handshake and AES-256 per record (vendored pingora-core patch 11).
#[test]
fn listener_prefers_aes128_over_the_clients_aes256() {
    let e = edge();
    let config = client_tls(std::sync::Arc::new(RecordingVerifier::default()));
    let first = config.crypto_provider().cipher_suites[0].suite();
    assert_eq!(
        first,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "the client must prefer AES-256 for this test to mean anything"
    );
    let name = rustls::pki_types::ServerName::try_from("hub.test").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", e.edge.https_port)).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    assert_eq!(
        conn.negotiated_cipher_suite().unwrap().suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
}

#[test]
fn hsts_on_every_tls_answer_never_on_plain_http_and_the_upstreams_own_wins() {
    let fx = Fixture::new();
    let (https_port, http_port, own_port) = (free_port(), free_port(), free_port());
    let desktop = fx.desktop("alice");
    // An upstream that sends its own Strict-Transport-Security.
    let script = fx.path().join("own_sts.py");
    std::fs::write(
        &script,
        "import http.server, sys\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200)\n        self.send_header('Strict-Transport-Security', 'max-age=60')\n        self.send_header('Content-Length', '3')\n        self.end_headers()\n        self.wfile.write(b'own')\n    def log_message(self, *a):\n        pass\nhttp.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
    )
    .unwrap();
    let _own = Killed(
        std::process::Command::new("python3")
            .arg(&script)
            .arg(own_port.to_string())
            .spawn()
            .unwrap(),
    );
    wait_port(own_port);
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{http_port}\"\n  - addr: \"127.0.0.1:{https_port}\"\n    tls:\n      certs: [{{ cert: \"{}\", key: \"{}\" }}]\n      hsts: {{ max_age: 365d, include_subdomains: true }}\nupstreams:\n{}  own:\n    servers: [\"127.0.0.1:{own_port}\"]\nroutes:\n  - path: /desktop/alice/\n    upstream: alice\n    strip_prefix: true\n  - path: /own/\n    upstream: own\n",
        fx.edge_cert.display(),
        fx.edge_key.display(),
        fx.desktop_upstream("alice", desktop)
    );
    let _edge = Deskgate::start(fx.path(), "hsts", &yaml, https_port);
    wait_port(http_port);
    let sts = |url: String| {
        let r = curl(&url, &[]);
        (
            r.status,
            r.headers
                .lines()
                .filter(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("strict-transport-security:")
                })
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>(),
        )
    };
    let ours = vec!["strict-transport-security: max-age=31536000; includeSubDomains".to_string()];
    // Proxied, and deskgate's own 404.
    assert_eq!(
        sts(format!(
            "https://hub.test:{https_port}/desktop/alice/whoami"
        )),
        (200, ours.clone())
    );
    assert_eq!(
        sts(format!("https://hub.test:{https_port}/nowhere")),
        (404, ours)
    );
    // The upstream's own header, once.
    let (status, own) = sts(format!("https://hub.test:{https_port}/own/x"));
    assert_eq!(status, 200);
    assert_eq!(own.len(), 1, "{own:?}");
    assert!(own[0].ends_with("max-age=60"), "{own:?}");
    // Never over plain HTTP.
    assert_eq!(
        sts(format!("http://hub.test:{http_port}/desktop/alice/whoami")),
        (200, vec![])
    );
    assert_eq!(
        sts(format!("http://hub.test:{http_port}/nowhere")),
        (404, vec![])
    );
}

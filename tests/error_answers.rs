//! Answers deskgate writes itself reveal nothing internal (issue 32): a generic body (a page
//! for browsers, two lines of text otherwise) and an `X-Request-Id`; the route, upstream,
//! server address and the hub's answer are in the log line with the same id.

mod common;
use common::hub::{spawn_hub, API_KEY};
use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

/// Internal names a test checks answers against: route and upstream names, addresses, ports,
/// and what the hub says.
struct Internals(Vec<String>);

/// One deskgate in front of a fake hub, a desktop and upstreams that fail in every way.
struct Site {
    _fx: Fixture,
    edge: Deskgate,
    /// A listener allowing one open request per client.
    limited_port: u16,
    access_log: std::path::PathBuf,
    internals: Internals,
    /// Signalled when the upstream that never answers got a request.
    held: mpsc::Receiver<()>,
}

fn site() -> Site {
    let fx = Fixture::new();
    let (port, limited_port) = (free_port(), free_port());
    let (hub, _) = spawn_hub();
    let alice = fx.desktop("alice");
    let refusing = free_port();
    let hub_down = free_port();
    // Accepts TCP but never speaks TLS: the connect timeout (1 s) runs out.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::mem::forget(silent);
    let (held_addr, held) = never_answers();
    let access_log = fx.path().join("access.log");
    let yaml = format!(
        r#"listeners:
{tls}  - addr: "127.0.0.1:{limited_port}"
    max_connections_per_client: 1
    tls:
      certs:
        - {{ cert: "{cert}", key: "{key}" }}
upstreams:
{alice}  desktop-refusing:
    servers: ["127.0.0.1:{refusing}"]
    tls: {{ verify: false }}
  desktop-silent:
    servers: ["{silent_addr}"]
    tls: {{ verify: false }}
  hub-backend:
    servers: ["{hub}"]
  hub-down-backend:
    servers: ["127.0.0.1:{hub_down}"]
  held-backend:
    servers: ["{held_addr}"]
routes:
  - path: "/desktop/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    block: ["/api/"]
  - path: "/kasm-wrongkey/{{name}}/"
    upstream:
      resolve: "http://{hub}/api/apache/container-target/{{name}}"
      headers: {{ X-API-Key: {{ env: WRONG_HUB_KEY }} }}
  - path: "/kasm/{{name}}/"
    upstream:
      resolve: "http://{hub}/api/apache/container-target/{{name}}"
      headers: {{ X-API-Key: {{ env: HUB_KEY }} }}
  - path: "/kasm-hubdown/{{name}}/"
    upstream:
      resolve: "http://127.0.0.1:{hub_down}/api/apache/container-target/{{name}}"
      headers: {{ X-API-Key: {{ env: HUB_KEY }} }}
  - path: "/private/{{name}}/"
    upstream: "desktop-{{name}}"
    auth: {{ url: "http://{hub}/api/auth/desktop/{{name}}", forward: [Cookie] }}
  - path: "/private-hubdown/{{name}}/"
    upstream: "desktop-{{name}}"
    auth: {{ url: "http://127.0.0.1:{hub_down}/api/auth/desktop/{{name}}", forward: [Cookie] }}
  - path: "/hub-down/"
    upstream: hub-down-backend
  - path: "/held/"
    upstream: held-backend
  - host: hub.test
    upstream: hub-backend
timeouts: {{ connect: 1s, read: 10s }}
max_header_bytes: 4096
log: {{ access: {{ format: json, path: "{access}" }} }}
"#,
        tls = fx.tls_listener(port),
        cert = fx.edge_cert.display(),
        key = fx.edge_key.display(),
        alice = fx.desktop_upstream("desktop-alice", alice),
        access = access_log.display(),
    );
    let edge = Deskgate::start_with_env(
        fx.path(),
        "edge",
        &yaml,
        port,
        &[("HUB_KEY", API_KEY), ("WRONG_HUB_KEY", "not-the-key")],
    );
    wait_port(limited_port);
    let mut internals = vec![
        "desktop-",
        "refusing",
        "silent",
        "hub-backend",
        "hub-down",
        "held-backend",
        "kasm",
        "private",
        "{name}",
        "127.0.0.1",
        "localhost",
        "bad key",
        "no such container",
        "login first",
        "not yours",
        "answered",
        "resolve",
        "upstream",
        "route",
        "deskgate",
        "Connect",
        "Refused",
        "refused",
        "api",
        "container-target",
        "kasm_user",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for addr in [hub, alice, silent_addr, held_addr] {
        internals.push(addr.port().to_string());
    }
    internals.push(refusing.to_string());
    internals.push(hub_down.to_string());
    Site {
        _fx: fx,
        edge,
        limited_port,
        access_log,
        internals: Internals(internals),
        held,
    }
}

/// A plain HTTP upstream that reads a request and never answers; says so on the channel.
fn never_answers() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(());
            kept.push(tcp);
        }
    });
    (addr, rx)
}

impl Site {
    fn url(&self, path: &str) -> String {
        // Not hub.test: a route naming the host would win over the path routes.
        format!("https://other.test:{}{path}", self.edge.https_port)
    }

    /// Checks an answer deskgate wrote: its status, a well-formed id, a generic body, and no
    /// internal name in the body or headers (the id itself left out: it is random hex).
    /// Returns the id.
    fn check(&self, what: &str, r: &CurlResponse, status: u16) -> String {
        assert_eq!(r.status, status, "{what}: {}\n{}", r.headers, r.body);
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{what}: no X-Request-Id in\n{}", r.headers));
        assert!(
            deskgate::edge::request_id::well_formed(id.as_bytes()),
            "{what}: {id}"
        );
        assert!(
            r.body.contains(&id),
            "{what}: the body names the id: {}",
            r.body
        );
        let seen = format!("{}\n{}", r.headers, r.body).replace(&id, "<id>");
        for name in &self.internals.0 {
            assert!(
                !seen.contains(name.as_str()),
                "{what}: the answer reveals `{name}`:\n{seen}"
            );
        }
        id
    }

    /// The process log's line(s) about request `id`.
    fn log_about(&self, id: &str) -> String {
        let log = self.edge.log_text();
        log.lines()
            .filter(|l| l.contains(id))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The access log's line for request `id` (written by a thread: waited for, bounded).
    fn access_line(&self, id: &str) -> serde_json::Value {
        let mut line = None;
        wait_until(Duration::from_secs(10), "the access log line", || {
            let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
            line = text
                .lines()
                .find(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
                .map(str::to_string);
            line.is_some()
        });
        serde_json::from_str(&line.unwrap()).unwrap()
    }
}

/// The hub refuses deskgate's API key (its lookup answers 401): the browser sees a generic
/// 502; the log says which route's lookup failed and that the hub answered 401.
#[test]
fn hub_refusing_the_key_is_a_generic_502_with_details_in_the_log() {
    let s = site();
    let r = curl(&s.url("/kasm-wrongkey/alice/"), &[]);
    let id = s.check("hub refusing the key", &r, 502);
    assert!(!r.body.contains("401"), "{}", r.body);
    let log = s.log_about(&id);
    assert!(
        log.contains("/kasm-wrongkey/{name}/") && log.contains("the hub answered 401"),
        "log for {id}:\n{log}\nwhole log:\n{}",
        s.edge.log_text()
    );
    let entry = s.access_line(&id);
    assert_eq!(entry["status"], 502);
}

/// The hub is down, for a resolver lookup, an access check and a route straight to it: each a
/// generic answer; the log has the hub's address and what failed.
#[test]
fn hub_down_is_a_generic_answer_with_details_in_the_log() {
    let s = site();
    for (what, path, status, detail) in [
        (
            "resolver lookup",
            "/kasm-hubdown/alice/",
            502,
            "desktop lookup",
        ),
        (
            "access check",
            "/private-hubdown/alice/",
            503,
            "failed closed",
        ),
        ("proxied", "/hub-down/x", 502, "hub-down-backend"),
    ] {
        let r = curl(&s.url(path), &[]);
        let id = s.check(what, &r, status);
        let log = s.log_about(&id);
        assert!(
            log.contains(detail) && log.contains("127.0.0.1:"),
            "{what}: log for {id}:\n{log}\nwhole log:\n{}",
            s.edge.log_text()
        );
        assert_eq!(s.access_line(&id)["status"], status);
    }
}

/// A desktop that refuses connections: a generic 502 (a page for a browser); the log line
/// names the upstream, its address and the error, with the same id.
#[test]
fn a_desktop_refusing_connections_is_a_generic_502_with_details_in_the_log() {
    let s = site();
    let r = curl(
        &s.url("/desktop/refusing/"),
        &["-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8"],
    );
    let id = s.check("desktop refusing", &r, 502);
    assert!(
        r.body.starts_with("<!DOCTYPE html>")
            && r.header("content-type").unwrap().starts_with("text/html"),
        "a browser gets a page: {}",
        r.body
    );
    let log = s.log_about(&id);
    assert!(
        log.contains("desktop-refusing") && log.contains("ConnectRefused"),
        "log for {id}:\n{log}\nwhole log:\n{}",
        s.edge.log_text()
    );
    let entry = s.access_line(&id);
    assert_eq!(entry["upstream"], "desktop-refusing");
}

/// A name with no desktop, by template and by the hub's lookup: a generic 404.
#[test]
fn an_unknown_desktop_is_a_generic_404_with_details_in_the_log() {
    let s = site();
    for (what, path, detail) in [
        (
            "no such upstream",
            "/desktop/nobody/",
            "no desktop desktop-nobody",
        ),
        ("the hub knows none", "/kasm/nobody/", "no desktop nobody"),
    ] {
        let r = curl(&s.url(path), &[]);
        let id = s.check(what, &r, 404);
        assert!(!r.body.contains("nobody"), "{}", r.body);
        let log = s.log_about(&id);
        assert!(
            log.contains(detail),
            "{what}: log for {id}:\n{log}\nwhole log:\n{}",
            s.edge.log_text()
        );
    }
}

/// A client's well-formed `X-Request-Id` is kept: on the answer, to the desktop, in the access
/// log; a malformed one is replaced. Proxied answers carry the id too.
#[test]
fn a_clients_request_id_is_kept_when_well_formed_and_passed_on() {
    let s = site();
    let r = curl(
        &s.url("/desktop/alice/headers"),
        &["-H", "X-Request-Id: lb-7f3a.9_c-1"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-request-id").as_deref(), Some("lb-7f3a.9_c-1"));
    assert!(r.body.contains("x-request-id: lb-7f3a.9_c-1"), "{}", r.body);
    assert_eq!(s.access_line("lb-7f3a.9_c-1")["status"], 200);

    let r = curl(
        &s.url("/desktop/alice/headers"),
        &["-H", "X-Request-Id: <script>alert(1)</script>"],
    );
    let id = r.header("x-request-id").unwrap();
    assert!(
        deskgate::edge::request_id::well_formed(id.as_bytes()),
        "{id}"
    );
    assert!(
        r.body.contains(&format!("x-request-id: {id}")),
        "{}",
        r.body
    );
    assert!(!r.body.contains("script"), "{}", r.body);

    // Deskgate's own answers keep the client's id too.
    let r = curl(&s.url("/desktop/nobody/"), &["-H", "X-Request-Id: abc-123"]);
    assert_eq!(r.header("x-request-id").as_deref(), Some("abc-123"));
    assert!(r.body.contains("request id: abc-123"), "{}", r.body);
}

/// Every kind of answer deskgate writes itself, one request each, checked for internal names.
#[test]
fn no_self_made_answer_names_anything_internal() {
    let s = site();
    let big = format!("X-Filler: {}", "x".repeat(5000));
    let cases: Vec<(&str, String, Vec<&str>, u16)> = vec![
        (
            "no route",
            format!("https://other.test:{}/x", s.edge.https_port),
            vec![],
            404,
        ),
        ("no desktop", s.url("/desktop/nobody/"), vec![], 404),
        ("hub has no desktop", s.url("/kasm/nobody/"), vec![], 404),
        (
            "blocked path",
            s.url("/desktop/alice/api/users"),
            vec![],
            403,
        ),
        (
            "access denied, no session",
            s.url("/private/alice/"),
            vec![],
            401,
        ),
        (
            "access denied, another user",
            s.url("/private/alice/"),
            vec!["-H", "Cookie: hub_session=bob"],
            403,
        ),
        (
            "access check down",
            s.url("/private-hubdown/alice/"),
            vec![],
            503,
        ),
        (
            "hub refusing the key",
            s.url("/kasm-wrongkey/alice/"),
            vec![],
            502,
        ),
        (
            "hub down (lookup)",
            s.url("/kasm-hubdown/alice/"),
            vec![],
            502,
        ),
        ("upstream down", s.url("/hub-down/"), vec![], 502),
        ("desktop refusing", s.url("/desktop/refusing/"), vec![], 502),
        ("desktop silent", s.url("/desktop/silent/"), vec![], 504),
        (
            "headers too large",
            s.url("/desktop/alice/"),
            vec!["-H", &big],
            431,
        ),
    ];
    for (what, url, extra, status) in &cases {
        for accept in ["*/*", "text/html"] {
            let mut args = extra.clone();
            args.extend([
                "-H",
                if accept == "*/*" {
                    "Accept: */*"
                } else {
                    "Accept: text/html"
                },
            ]);
            let r = curl(url, &args);
            s.check(&format!("{what} (Accept: {accept})"), &r, *status);
        }
    }

    // Over the listener's limit: one request held open, the next one gets 503.
    let limited = s.limited_port;
    let holder =
        std::thread::spawn(move || curl(&format!("https://other.test:{limited}/held/"), &[]));
    s.held
        .recv_timeout(Duration::from_secs(20))
        .expect("the held request reached its upstream");
    let r = curl(&format!("https://other.test:{limited}/desktop/alice/"), &[]);
    s.check("over the connection limit", &r, 503);
    let held = holder.join().unwrap();
    s.check("held until the read timeout", &held, 504);
}

/// A WebSocket's `101` carries the id, and its access log line (written when it closes) too.
#[tokio::test(flavor = "multi_thread")]
async fn a_websockets_request_id_is_on_its_101_and_its_access_log_line() {
    use futures_util::SinkExt;
    let s = site();
    let url = format!(
        "wss://other.test:{}/desktop/alice/websockify",
        s.edge.https_port
    );
    let (mut ws, resp) = ws_connect_with(
        &url,
        &[
            ("Origin", "https://other.test"),
            ("Sec-WebSocket-Protocol", "binary"),
            ("X-Request-Id", "ws-42"),
        ],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "ws-42");
    assert_eq!(ask(&mut ws, "whoami").await, "alice");
    ws.close(None).await.unwrap();
    let entry = s.access_line("ws-42");
    assert_eq!(entry["status"], 101);
    assert!(
        entry["websocket"]["bytes_up"].as_u64().unwrap() > 0,
        "{entry}"
    );
    let _ = ws.flush().await;
}

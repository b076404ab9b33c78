//! The hub integration: runtime routes API, resolver routes, access checks, noVNC redirects.

mod common;
use common::hub::{spawn_hub, HubState, API_KEY};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

struct Setup {
    fx: Fixture,
    edge: Deskgate,
    admin_port: u16,
    hub: Arc<HubState>,
    alice: std::net::SocketAddr,
    alice_upgrades: Arc<std::sync::atomic::AtomicUsize>,
    yaml: String,
}

fn setup() -> Setup {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let (hub_addr, hub) = spawn_hub();
    let (alice, alice_upgrades) = fx.desktop_counted("alice");
    hub.targets
        .lock()
        .unwrap()
        .insert("alice".into(), alice.to_string());
    let pw = fx.password_file.display();
    let closed = free_port();
    let yaml = format!(
        r#"listeners:
{tls}admin: {{ addr: "127.0.0.1:{admin_port}", token_env: CONFIGPROXY_AUTH_TOKEN }}
state_file: "{state}"
dynamic:
  tls: {{ verify: false }}
  basic_auth: {{ user: {DESKTOP_USER}, password_file: "{pw}" }}
  strip_prefix: true
  block: ["/api/"]
upstreams:
  hub:
    servers: ["{hub_addr}"]
{alice_up}routes:
  - host: "desktop-{{name}}.resolve.test"
    upstream:
      resolve: "http://{hub_addr}/api/apache/container-target/{{name}}"
      headers: {{ X-API-Key: {{ env: HUB_API_KEY }} }}
      cache: 10s
      tls: {{ verify: false }}
      basic_auth: {{ user: {DESKTOP_USER}, password_file: "{pw}" }}
    fallback: {{ redirect: "https://hub.test/" }}
  - path: "/resolve/{{name}}/"
    strip_prefix: true
    upstream:
      resolve: "http://{hub_addr}/api/apache/container-target/{{name}}"
      headers: {{ X-API-Key: {{ env: HUB_API_KEY }} }}
      tls: {{ verify: false }}
      basic_auth: {{ user: {DESKTOP_USER}, password_file: "{pw}" }}
  - path: "/hubdown/{{name}}/"
    upstream:
      resolve: "http://127.0.0.1:{closed}/api/apache/container-target/{{name}}"
  - path: "/guarded/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    auth: {{ url: "http://{hub_addr}/api/auth/desktop/{{name}}", forward: [Cookie], copy: [X-User], cache: 5s }}
  - path: "/login-guarded/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    auth: {{ url: "http://{hub_addr}/api/auth/desktop/{{name}}", forward: [Cookie], deny_redirect: "https://hub.test/login" }}
  - path: "/authdown/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    auth: {{ url: "http://127.0.0.1:{closed}/api/auth/desktop/{{name}}", forward: [Cookie] }}
  - path: "/novnc/{{name}}/"
    strip_prefix: true
    novnc: true
    upstream: "desktop-{{name}}"
  - path: "/"
    upstream: hub
timeouts: {{ connect: 1s }}
"#,
        tls = fx.tls_listener(https_port),
        state = fx.path().join("routes.json").display(),
        alice_up = fx.desktop_upstream("desktop-alice", alice),
    );
    let edge = start(&fx, &yaml, https_port, admin_port);
    Setup {
        fx,
        edge,
        admin_port,
        hub,
        alice,
        alice_upgrades,
        yaml,
    }
}

fn start(fx: &Fixture, yaml: &str, https_port: u16, admin_port: u16) -> Deskgate {
    let edge = Deskgate::start_with_env(
        fx.path(),
        "edge",
        yaml,
        https_port,
        &[
            ("CONFIGPROXY_AUTH_TOKEN", ADMIN_TOKEN),
            ("HUB_API_KEY", API_KEY),
        ],
    );
    wait_port(admin_port);
    edge
}

fn routes_json(s: &Setup) -> serde_json::Value {
    let r = admin(s.admin_port, "GET", "/api/routes", None, Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[test]
fn routes_api_adds_lists_gets_and_deletes_and_traffic_follows() {
    let s = setup();
    let p = s.edge.https_port;
    let body = format!(
        r#"{{"target": "https://{}", "user": "alice", "server_name": ""}}"#,
        s.alice
    );

    assert_eq!(
        admin(s.admin_port, "GET", "/api/routes", None, None).status,
        403
    );
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/user/alice",
            Some(&body),
            Some("wrong")
        )
        .status,
        403
    );
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/user/alice",
            Some("not json"),
            Some(ADMIN_TOKEN)
        )
        .status,
        400
    );
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/user/alice",
            Some(&body),
            Some(ADMIN_TOKEN)
        )
        .status,
        201
    );

    let all = routes_json(&s);
    let route = &all["/user/alice"];
    assert_eq!(route["target"], format!("https://{}", s.alice));
    assert_eq!(route["user"], "alice");
    assert!(route["last_activity"].as_str().unwrap().ends_with('Z'));
    let one = admin(
        s.admin_port,
        "GET",
        "/api/routes/user/alice",
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(one.status, 200);

    // dynamic: TLS verify off, Basic auth injected, prefix stripped, /api/ blocked.
    let r = curl(&format!("https://hub.test:{p}/user/alice/whoami"), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));
    assert_eq!(
        curl(&format!("https://hub.test:{p}/user/alice/api/x"), &[]).status,
        403
    );

    // Host routing, configurable-http-proxy style: /host/path.
    let host_body = format!(r#"{{"target": "https://{}"}}"#, s.alice);
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/desktop-carol.hub.test/",
            Some(&host_body),
            Some(ADMIN_TOKEN)
        )
        .status,
        201
    );
    let r = curl(&format!("https://desktop-carol.hub.test:{p}/whoami"), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));

    assert_eq!(
        admin(
            s.admin_port,
            "DELETE",
            "/api/routes/user/alice",
            None,
            Some(ADMIN_TOKEN)
        )
        .status,
        204
    );
    assert_eq!(
        admin(
            s.admin_port,
            "DELETE",
            "/api/routes/user/alice",
            None,
            Some(ADMIN_TOKEN)
        )
        .status,
        404
    );
    let r = curl(&format!("https://hub.test:{p}/user/alice/whoami"), &[]);
    assert_eq!(r.body, "hub", "after DELETE the hub's / route answers");
}

#[tokio::test(flavor = "multi_thread")]
async fn last_activity_moves_while_only_websocket_frames_flow() {
    let s = setup();
    let body = format!(r#"{{"target": "https://{}"}}"#, s.alice);
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/desktop/alice",
            Some(&body),
            Some(ADMIN_TOKEN)
        )
        .status,
        201
    );
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{}/desktop/alice/websockify",
        s.edge.https_port
    ))
    .await
    .unwrap();
    let after_upgrade = deskgate::telemetry::activity::now_ms();
    let last = |s: &Setup| {
        deskgate::hub::runtime_routes::parse_iso8601(
            routes_json(s)["/desktop/alice"]["last_activity"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };

    // Frames for 2.5 s, no HTTP requests: last_activity must follow them.
    for i in 0..6 {
        ws.send(Message::binary(vec![i; 64])).await.unwrap();
        ws.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let moved = last(&s);
    assert!(
        moved >= after_upgrade + 1500,
        "last_activity {moved} did not follow frames after {after_upgrade}"
    );

    // inactive_since: the route is active after `after_upgrade`, inactive before `now + 1 h`.
    let since = |ms: u64| deskgate::hub::runtime_routes::format_iso8601(ms);
    let q = admin(
        s.admin_port,
        "GET",
        &format!("/api/routes?inactive_since={}", since(after_upgrade)),
        None,
        Some(ADMIN_TOKEN),
    );
    assert_eq!(q.body, "{}", "{}", q.body);
    let q = admin(
        s.admin_port,
        "GET",
        &format!("/api/routes?inactive_since={}", since(moved + 3_600_000)),
        None,
        Some(ADMIN_TOKEN),
    );
    assert!(q.body.contains("/desktop/alice"), "{}", q.body);
    assert_eq!(
        admin(
            s.admin_port,
            "GET",
            "/api/routes?inactive_since=yesterday",
            None,
            Some(ADMIN_TOKEN)
        )
        .status,
        400
    );
}

#[test]
fn runtime_routes_survive_a_restart() {
    let s = setup();
    let body = format!(r#"{{"target": "https://{}", "user": "alice"}}"#, s.alice);
    assert_eq!(
        admin(
            s.admin_port,
            "POST",
            "/api/routes/user/alice",
            Some(&body),
            Some(ADMIN_TOKEN)
        )
        .status,
        201
    );
    // The state file is written off the request path, within about a second of the change.
    let saved = || -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(s.fx.path().join("routes.json")).ok()?;
        serde_json::from_str(&text).ok()
    };
    wait_until(
        Duration::from_secs(10),
        "the route in the state file",
        || saved().is_some_and(|state| state.get("/user/alice").is_some()),
    );
    assert_eq!(saved().unwrap()["/user/alice"]["user"], "alice");

    let Setup {
        fx,
        edge,
        admin_port,
        yaml,
        ..
    } = s;
    let https_port = edge.https_port;
    drop(edge); // SIGKILL: nothing gets written at exit
    let edge = start(&fx, &yaml, https_port, admin_port);
    let r = curl(
        &format!("https://hub.test:{}/user/alice/whoami", edge.https_port),
        &[],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));
    let r = admin(
        admin_port,
        "GET",
        "/api/routes/user/alice",
        None,
        Some(ADMIN_TOKEN),
    );
    assert!(r.body.contains("\"user\":\"alice\""), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn resolver_hit_miss_fallback_cache_and_single_flight() {
    let s = setup();
    let p = s.edge.https_port;
    let lookups = |name: &str| s.hub.calls(&format!("/api/apache/container-target/{name}"));

    let r = curl(
        &format!("https://desktop-alice.resolve.test:{p}/whoami"),
        &[],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));
    let r = curl(
        &format!("https://desktop-alice.resolve.test:{p}/whoami"),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(lookups("alice"), 1, "second request served from the cache");

    let (mut ws, _) = ws_connect(&format!("wss://desktop-alice.resolve.test:{p}/websockify"))
        .await
        .unwrap();
    assert_eq!(ask(&mut ws, "whoami").await, "alice");

    for name in ["nobody", "nulluser", "emptyuser"] {
        let r = curl(&format!("https://desktop-{name}.resolve.test:{p}/"), &[]);
        assert_eq!(r.status, 302, "{name}");
        assert_eq!(
            r.header("location").as_deref(),
            Some("https://hub.test/"),
            "{name}"
        );
    }
    let r = curl(&format!("https://hub.test:{p}/resolve/nobody/"), &[]);
    assert_eq!(r.status, 404, "no fallback: 404");

    // 50 concurrent first requests for a new desktop: one lookup.
    let (bob, _) = s.fx.desktop_counted("bob");
    s.hub
        .targets
        .lock()
        .unwrap()
        .insert("bob".into(), bob.to_string());
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let url = format!("https://hub.test:{p}/resolve/bob/whoami");
            std::thread::spawn(move || curl(&url, &[]))
        })
        .collect();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "bob\n"));
    }
    assert_eq!(lookups("bob"), 1);

    // The hub down: 502 well within the connect timeout; other routes unaffected.
    // (A client giving up after 3 s would see status 0.)
    let r = curl(
        &format!("https://hub.test:{p}/hubdown/alice/"),
        &["--max-time", "3"],
    );
    assert_eq!(r.status, 502, "{}", r.body);
    // A slow hub: 504 after the timeout, while other requests are served meanwhile.
    let slow =
        std::thread::spawn(move || curl(&format!("https://hub.test:{p}/resolve/slow-carol/"), &[]));
    let r = curl(
        &format!("https://desktop-alice.resolve.test:{p}/whoami"),
        &[],
    );
    assert_eq!(r.status, 200);
    let r = slow.join().unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn access_checks_allow_deny_redirect_fail_closed_and_guard_upgrades() {
    let s = setup();
    let p = s.edge.https_port;
    let alice_cookie = "Cookie: hub_session=alice; theme=dark";

    let r = curl(
        &format!("https://hub.test:{p}/guarded/alice/headers"),
        &["-H", alice_cookie, "-H", "X-User: mallory"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("x-user: alice"),
        "the hub's X-User is copied: {}",
        r.body
    );
    assert!(
        !r.body.contains("mallory"),
        "a browser-sent X-User never reaches the desktop"
    );
    assert!(
        !r.body.contains("hub_session"),
        "the hub cookie is not leaked to the desktop: {}",
        r.body
    );

    let r = curl(
        &format!("https://hub.test:{p}/guarded/alice/whoami"),
        &["-H", "Cookie: hub_session=bob"],
    );
    assert_eq!(r.status, 403);
    let r = curl(&format!("https://hub.test:{p}/guarded/alice/whoami"), &[]);
    assert_eq!(r.status, 401);
    let r = curl(
        &format!("https://hub.test:{p}/login-guarded/alice/whoami"),
        &["-H", "Cookie: hub_session=bob"],
    );
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (302, Some("https://hub.test/login"))
    );
    let r = curl(
        &format!("https://hub.test:{p}/authdown/alice/whoami"),
        &["-H", alice_cookie],
    );
    assert_eq!(r.status, 503, "auth service down: denied");

    // Cached for 5 s: a second allowed request makes no second call.
    let before = s.hub.calls("/api/auth/desktop/alice");
    assert_eq!(
        curl(
            &format!("https://hub.test:{p}/guarded/alice/whoami"),
            &["-H", alice_cookie]
        )
        .status,
        200
    );
    assert_eq!(s.hub.calls("/api/auth/desktop/alice"), before);

    // Upgrades are checked too: a denied one never reaches the desktop.
    let url = format!("wss://hub.test:{p}/guarded/alice/websockify");
    let before = s.alice_upgrades.load(Ordering::SeqCst);
    let denied = ws_connect_with(
        &url,
        &[
            ("Origin", "https://hub.test"),
            ("Sec-WebSocket-Protocol", "binary"),
            ("Cookie", "hub_session=bob"),
        ],
        Default::default(),
    )
    .await;
    match denied {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(
        s.alice_upgrades.load(Ordering::SeqCst),
        before,
        "the denied upgrade reached the desktop"
    );
    let (mut ws, _) = ws_connect_with(
        &url,
        &[
            ("Origin", "https://hub.test"),
            ("Sec-WebSocket-Protocol", "binary"),
            ("Cookie", "hub_session=alice"),
        ],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(ask(&mut ws, "whoami").await, "alice");
}

#[tokio::test(flavor = "multi_thread")]
async fn novnc_page_is_redirected_to_carry_its_websocket_path() {
    let s = setup();
    let p = s.edge.https_port;
    let r = curl(&format!("https://hub.test:{p}/novnc/alice"), &[]);
    assert_eq!(
        (r.status, r.header("location").as_deref()),
        (302, Some("/novnc/alice/?path=novnc/alice/websockify"))
    );
    let r = curl(
        &format!("https://hub.test:{p}/novnc/alice/vnc.html?autoconnect=1"),
        &[],
    );
    assert_eq!(
        r.header("location").as_deref(),
        Some("/novnc/alice/vnc.html?autoconnect=1&path=novnc/alice/websockify")
    );
    let r = curl(
        &format!("https://hub.test:{p}/novnc/alice/vnc.html?path=novnc/alice/websockify"),
        &[],
    );
    assert_eq!(r.status, 200, "with path= the page is served");
    let r = curl(&format!("https://hub.test:{p}/novnc/alice/app/ui.js"), &[]);
    assert_eq!(r.status, 200, "assets are not redirected");
    // And the WebSocket comes back under the prefix.
    let (mut ws, _) = ws_connect(&format!("wss://hub.test:{p}/novnc/alice/websockify"))
        .await
        .unwrap();
    assert_eq!(ask(&mut ws, "whoami").await, "alice");
}

//! Upstreams with several servers: round robin, least connections, hashing, active health
//! checks, passive marking-down and retries on the next server.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn edge(fx: &Fixture, servers: &[String], balance: &str) -> (Deskgate, u16) {
    let (https_port, admin_port) = (free_port(), free_port());
    let list = servers
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\nupstreams:\n  pool:\n    servers: [{list}]\n    tls: {{ verify: false, sni: kasm }}\n    basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n{balance}routes:\n  - path: /\n    upstream: pool\ntimeouts: {{ connect: 1s }}\n",
        fx.tls_listener(https_port),
        fx.password_file.display()
    );
    let d = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    (d, admin_port)
}

fn whoami(port: u16, extra: &[&str]) -> String {
    let r = curl(&format!("https://hub.test:{port}/whoami"), extra);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body.trim().to_string()
}

#[test]
fn round_robin_spreads_requests() {
    let fx = Fixture::new();
    let servers = vec![fx.desktop("a").to_string(), fx.desktop("b").to_string()];
    let (edge, _) = edge(&fx, &servers, "    balance: round_robin\n");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        *seen.entry(whoami(edge.https_port, &[])).or_default() += 1;
    }
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&3), Some(&3)),
        "{seen:?}"
    );
}

#[test]
fn hash_keeps_a_user_on_one_server() {
    let fx = Fixture::new();
    let servers = vec![fx.desktop("a").to_string(), fx.desktop("b").to_string()];
    let (edge, _) = edge(
        &fx,
        &servers,
        "    balance: hash\n    hash_key: \"header:X-User\"\n",
    );
    let mut all = std::collections::HashSet::new();
    for user in 0..12 {
        let header = format!("X-User: user{user}");
        let first = whoami(edge.https_port, &["-H", &header]);
        for _ in 0..3 {
            assert_eq!(
                whoami(edge.https_port, &["-H", &header]),
                first,
                "user{user} moved"
            );
        }
        all.insert(first);
    }
    assert_eq!(all.len(), 2, "12 users should use both servers");
}

#[tokio::test(flavor = "multi_thread")]
async fn least_conn_avoids_the_server_holding_a_desktop() {
    let fx = Fixture::new();
    let servers = vec![fx.desktop("a").to_string(), fx.desktop("b").to_string()];
    let (edge, _) = edge(&fx, &servers, "    balance: least_conn\n");
    let (mut ws, _) = ws_connect(&format!("wss://hub.test:{}/websockify", edge.https_port))
        .await
        .unwrap();
    ws.send(Message::text("whoami")).await.unwrap();
    let busy = ws
        .next()
        .await
        .unwrap()
        .unwrap()
        .into_text()
        .unwrap()
        .to_string();
    for _ in 0..4 {
        assert_ne!(
            whoami(edge.https_port, &[]),
            busy,
            "least_conn sent a request to the server holding the WebSocket"
        );
    }
}

#[test]
fn dead_server_is_skipped_by_retry_then_by_health_check_and_comes_back() {
    let fx = Fixture::new();
    let dead_port = free_port();
    let servers = vec![
        format!("127.0.0.1:{dead_port}"),
        fx.desktop("alive").to_string(),
    ];
    let (edge, admin) = edge(&fx, &servers, "    health: { tcp: true, interval: 1s }\n");
    // Passive: a refused connection is retried on the next server; the client never sees 502.
    for _ in 0..6 {
        assert_eq!(whoami(edge.https_port, &[]), "alive");
    }
    // Active: once the check has run, the dead server is not even tried.
    wait_until(Duration::from_secs(10), "a health check round", || {
        let before = metric(admin, "deskgate_upstream_connect_errors_total");
        for _ in 0..4 {
            whoami(edge.https_port, &[]);
        }
        metric(admin, "deskgate_upstream_connect_errors_total") == before
    });
    // It comes back: health checks bring it into rotation without a restart.
    let _revived = DesktopProcess::start(&fx, "revived", dead_port);
    wait_until(
        Duration::from_secs(30),
        "the revived server to get traffic",
        || whoami(edge.https_port, &[]) == "revived",
    );
}

#[test]
fn http_health_check_uses_the_upstream_credentials() {
    let fx = Fixture::new();
    let dead_port = free_port();
    let servers = vec![
        format!("127.0.0.1:{dead_port}"),
        fx.desktop("alive").to_string(),
    ];
    let (edge, admin) = edge(
        &fx,
        &servers,
        "    health: { http: /whoami, interval: 1s }\n",
    );
    wait_until(Duration::from_secs(10), "the HTTP check to settle", || {
        let before = metric(admin, "deskgate_upstream_connect_errors_total");
        for _ in 0..4 {
            assert_eq!(
                whoami(edge.https_port, &[]),
                "alive",
                "the Basic-auth desktop must count as healthy"
            );
        }
        metric(admin, "deskgate_upstream_connect_errors_total") == before
    });
}

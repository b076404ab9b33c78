//! Operations and hardening with the real binary: reload under load, binary upgrade, bad
//! input, limits, dying desktops, metrics and access logs.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn config(
    fx: &Fixture,
    https_port: u16,
    admin_port: u16,
    desktops: &[(&str, std::net::SocketAddr)],
    extra_routes: &str,
    extra: &str,
) -> String {
    let mut upstreams = String::new();
    for (name, addr) in desktops {
        upstreams.push_str(&fx.desktop_upstream(&format!("desktop-{name}"), *addr));
    }
    format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\nupstreams:\n{upstreams}routes:\n  - path: \"/desktop/{{name}}/\"\n    strip_prefix: true\n    upstream: \"desktop-{{name}}\"\n{extra_routes}{extra}",
        fx.tls_listener(https_port)
    )
}

fn start(fx: &Fixture, yaml: &str, https_port: u16, admin_port: u16) -> Deskgate {
    Deskgate::start_with_admin(fx.path(), "edge", yaml, https_port, admin_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_drops_no_websocket_and_loses_no_byte() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let conf_path = fx.path().join("edge.yaml");
    let yaml = |gen: usize| {
        let mut routes = String::new();
        for g in 1..=gen {
            routes.push_str(&format!(
                "  - path: \"/gen{g}/\"\n    strip_prefix: true\n    upstream: desktop-alice\n"
            ));
        }
        config(
            &fx,
            https_port,
            admin_port,
            &[("alice", alice)],
            &routes,
            "",
        )
    };
    let edge = start(&fx, &yaml(0), https_port, admin_port);

    // 200 WebSockets, each echoing numbered 1 KiB messages for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..200u32 {
        let (stop, bytes) = (stop.clone(), bytes.clone());
        let url = format!("wss://hub.test:{https_port}/desktop/alice/websockify");
        clients.push(tokio::spawn(async move {
            let (mut ws, _) = ws_connect(&url)
                .await
                .map_err(|e| format!("client {c}: connect: {e}"))?;
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let mut payload = vec![(c % 251) as u8; 1024];
                payload[..4].copy_from_slice(&seq.to_be_bytes());
                ws.send(Message::binary(payload.clone()))
                    .await
                    .map_err(|e| format!("client {c}: send {seq}: {e}"))?;
                match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                    Ok(Some(Ok(Message::Binary(b)))) if b.as_ref() == payload.as_slice() => {}
                    other => {
                        return Err(format!(
                            "client {c}: message {seq} not echoed intact: {other:?}"
                        ))
                    }
                }
                bytes.fetch_add(1024, Ordering::Relaxed);
                seq += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ws.close(None)
                .await
                .map_err(|e| format!("client {c}: close: {e}"))?;
            Ok::<u32, String>(seq)
        }));
    }
    wait_until(Duration::from_secs(60), "200 WebSockets open", || {
        metric(admin_port, "deskgate_websockets_open") >= 200
    });

    // 20 reloads, every fourth one broken; each good one adds a route that must be served.
    let (mut good, mut bad, mut generation) = (0, 0, 0);
    for i in 1..=20 {
        if i % 4 == 0 {
            std::fs::write(&conf_path, "listeners:\n  - addr: [not, an, address]\n").unwrap();
            signal(edge.pid(), "HUP");
            bad += 1;
            wait_until(
                Duration::from_secs(20),
                "the bad reload to be rejected",
                || metric(admin_port, "deskgate_reload_failures_total") == bad,
            );
        } else {
            generation += 1;
            std::fs::write(&conf_path, yaml(generation)).unwrap();
            signal(edge.pid(), "HUP");
            good += 1;
            wait_until(Duration::from_secs(20), "the reload to apply", || {
                metric(admin_port, "deskgate_reloads_total") == good
            });
            let r = curl(
                &format!("https://hub.test:{https_port}/gen{generation}/whoami"),
                &[],
            );
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, "alice\n"),
                "route of reload {i}"
            );
        }
        // The routes of the last good config keep serving after a bad one.
        let r = curl(
            &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
            &[],
        );
        assert_eq!(r.status, 200, "after reload {i}");
    }
    assert!(
        edge.log_text().contains("edge.yaml:2:"),
        "a rejected reload names FILE:LINE:COL in the log"
    );

    stop.store(true, Ordering::Relaxed);
    let mut messages = 0;
    for c in clients {
        messages += c.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let moved = bytes.load(Ordering::Relaxed);
    assert_eq!(moved, messages as u64 * 1024);
    println!("reload under load: 200 WebSockets, {good} good + {bad} bad reloads, {messages} messages ({} KiB) echoed, 0 dropped, 0 lost", moved / 1024);
}

#[test]
fn binary_upgrade_refuses_no_connection_and_drains_open_websockets() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let pid_file = fx.path().join("deskgate.pid");
    let yaml = config(
        &fx,
        https_port,
        admin_port,
        &[("alice", alice)],
        "",
        &format!(
            "pid_file: \"{}\"\ntimeouts: {{ drain: 20s }}\n",
            pid_file.display()
        ),
    );
    let old = start(&fx, &yaml, https_port, admin_port);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut ws, _) = rt
        .block_on(ws_connect(&format!(
            "wss://hub.test:{https_port}/desktop/alice/websockify"
        )))
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let looper = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let r = curl(
                    &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
                    &[],
                );
                if r.status == 200 {
                    ok += 1;
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.push(r.status)
                }
            }
            (ok, failed)
        })
    };

    // The new binary waits for the sockets; SIGQUIT makes the old one hand them over.
    let log = fx.path().join("new.log");
    let child = std::process::Command::new(BIN)
        .args(["-u", "-c"])
        .arg(fx.path().join("edge.yaml"))
        .env("CONFIGPROXY_AUTH_TOKEN", ADMIN_TOKEN)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(fx.path().join("new.err")).unwrap())
        .spawn()
        .unwrap();
    let upgrade_sock = format!("{}.upgrade.sock", pid_file.display());
    wait_until(
        Duration::from_secs(30),
        "the new process to wait on the upgrade socket",
        || std::path::Path::new(&upgrade_sock).exists(),
    );
    signal(old.pid(), "QUIT");
    let new = Deskgate::from_child(child, https_port, fx.path().join("new.err"));
    wait_until(
        Duration::from_secs(10),
        "the pid file to name the new process",
        || std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == new.pid().to_string()),
    );
    // The WebSocket opened on the old process still works while it drains.
    rt.block_on(async {
        assert_eq!(ask(&mut ws, "whoami").await, "alice");
    });
    // Keep the loop going until the new process alone has served a few more requests.
    let after_takeover = served.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(30),
        "requests served after the takeover",
        || served.load(Ordering::Relaxed) >= after_takeover + 20,
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = looper.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed during the upgrade (statuses {failed:?}), {ok} ok",
        failed.len()
    );
    assert!(ok > 0);
    drop(old);
}

#[test]
fn slow_header_client_is_cut_while_others_are_served() {
    let fx = Fixture::new();
    let (https_port, admin_port, plain_port) = (free_port(), free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = config(
        &fx,
        https_port,
        admin_port,
        &[("alice", alice)],
        "",
        "timeouts: { client_header: 2s }\n",
    )
    .replacen(
        "listeners:\n",
        &format!("listeners:\n  - addr: \"127.0.0.1:{plain_port}\"\n"),
        1,
    );
    let _edge = start(&fx, &yaml, https_port, admin_port);

    let mut slow = std::net::TcpStream::connect(("127.0.0.1", plain_port)).unwrap();
    slow.write_all(b"GET /desktop/alice/whoami HTTP/1.1\r\nHost: hub.test\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // A give-up limit, not a speed claim: 100 reads of 300 ms are 30 s, far past the 2 s
    // client_header timeout, and the loop ends as soon as deskgate closes the connection.
    const GIVE_UP_AFTER_BYTES: usize = 100;
    let started = Instant::now();
    let mut served_meanwhile = 0;
    let mut cut = None;
    for _ in 0..GIVE_UP_AFTER_BYTES {
        // One header byte every 300 ms: each read is quick, the header never completes.
        if let Err(e) = slow.write_all(b"X") {
            cut = Some((format!("write failed: {e}"), started.elapsed()));
            break;
        }
        let mut buf = [0u8; 64];
        match slow.read(&mut buf) {
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Ok(0) => {
                cut = Some(("closed (EOF)".to_string(), started.elapsed()));
                break;
            }
            Ok(n) => {
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                cut = Some((format!("answered {answer:?}"), started.elapsed()));
                break;
            }
            Err(e) => {
                cut = Some((format!("reset: {e}"), started.elapsed()));
                break;
            }
        }
        let r = curl(
            &format!("http://hub.test:{plain_port}/desktop/alice/whoami"),
            &[],
        );
        assert_eq!(
            r.status, 200,
            "others are served while a slow client trickles"
        );
        served_meanwhile += 1;
    }
    let Some((how, closed_after)) = cut else {
        panic!(
            "deskgate never cut the slow client: its connection stayed open through \
             {GIVE_UP_AFTER_BYTES} header bytes sent 300 ms apart (client_header: 2s)"
        );
    };
    // A lower bound of the configured timeout is a correctness check, not a speed claim:
    // deskgate must not cut a client before its client_header time (load only lengthens it).
    assert!(
        closed_after >= Duration::from_millis(1500),
        "cut after {closed_after:?} ({how}), before client_header (2 s)"
    );
    assert!(
        served_meanwhile > 0,
        "no other request was served while the slow client trickled (it was {how})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_the_right_answer_and_hurts_no_one_else() {
    let fx = Fixture::new();
    let (https_port, admin_port, plain_port) = (free_port(), free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = config(&fx, https_port, admin_port, &[("alice", alice)], "", "").replacen(
        "listeners:\n",
        &format!("listeners:\n  - addr: \"127.0.0.1:{plain_port}\"\n"),
        1,
    );
    let _edge = start(&fx, &yaml, https_port, admin_port);
    // A desktop session that must survive everything below.
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/alice/websockify"
    ))
    .await
    .unwrap();

    let big = format!("X-Big: {}", "a".repeat(100_000));
    let r = curl(
        &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
        &["--http1.1", "-H", &big],
    );
    assert_eq!(r.status, 431);

    let raw = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", plain_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(raw(b"THIS IS NOT HTTP\r\n\r\n").starts_with("HTTP/1.1 400"));
    let odd_host = raw(b"GET / HTTP/1.1\r\nHost: [unclosed\r\nConnection: close\r\n\r\n");
    assert!(
        odd_host.starts_with("HTTP/1.1 4"),
        "a malformed Host gets a 4xx, not a dropped connection: {odd_host:?}"
    );

    // An Upgrade the desktop refuses (no Origin: KasmVNC-style 200 page) passes through as HTTP.
    let r = curl(
        &format!("https://hub.test:{https_port}/desktop/alice/websockify"),
        &[
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<h1>desktop alice</h1>"));

    // Garbage instead of a TLS ClientHello: that connection closes.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", https_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);

    ws.send(Message::text("whoami")).await.unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "alice",
        "the desktop session survived"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_limits_refuse_politely_and_keep_open_desktops() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = config(&fx, https_port, admin_port, &[("alice", alice)], "", "")
        .replacen(&format!("  - addr: \"127.0.0.1:{https_port}\"\n"), &format!("  - addr: \"127.0.0.1:{https_port}\"\n    max_connections: 3\n    max_connections_per_client: 2\n"), 1);
    let _edge = start(&fx, &yaml, https_port, admin_port);
    let url = format!("wss://hub.test:{https_port}/desktop/alice/websockify");
    let (mut a, _) = ws_connect(&url).await.unwrap();
    let (mut b, _) = ws_connect(&url).await.unwrap();
    match ws_connect(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!(
            "third desktop from one client must get 503, got {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    assert_eq!(
        curl(
            &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
            &[]
        )
        .status,
        503
    );
    for ws in [&mut a, &mut b] {
        assert_eq!(ask(ws, "whoami").await, "alice");
    }
    a.close(None).await.unwrap();
    while a.next().await.is_some() {}
    wait_until(Duration::from_secs(10), "a freed slot", || {
        curl(
            &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
            &[],
        )
        .status
            == 200
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_desktop_closes_its_websockets_properly_and_comes_back() {
    let fx = Fixture::new();
    let (https_port, admin_port, doomed_port) = (free_port(), free_port(), free_port());
    let mut doomed = DesktopProcess::start(&fx, "doomed", doomed_port);
    let alice = fx.desktop("alice");
    let yaml = config(
        &fx,
        https_port,
        admin_port,
        &[("alice", alice), ("doomed", doomed.addr)],
        "",
        "",
    );
    let edge = start(&fx, &yaml, https_port, admin_port);
    let (mut d, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/doomed/websockify"
    ))
    .await
    .unwrap();
    let (mut a, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/alice/websockify"
    ))
    .await
    .unwrap();
    assert_eq!(ask(&mut d, "whoami").await, "doomed");

    doomed.kill();
    let end = tokio::time::timeout(Duration::from_secs(20), d.next())
        .await
        .expect("the browser learns within 20 s");
    match end {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Error),
        other => panic!("expected a close frame with 1011, got {other:?}"),
    }
    wait_until(
        Duration::from_secs(10),
        "the warning for the killed desktop",
        || {
            edge.log_text()
                .contains("desktop desktop-doomed ended an open WebSocket")
        },
    );

    a.send(Message::text("whoami")).await.unwrap();
    assert_eq!(
        a.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "alice",
        "other desktops unaffected"
    );
    let _back = DesktopProcess::start(&fx, "doomed", doomed_port);
    let (mut d2, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/doomed/websockify"
    ))
    .await
    .unwrap();
    d2.send(Message::text("whoami")).await.unwrap();
    assert_eq!(
        d2.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "doomed",
        "back without restarting deskgate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_access_log_without_secrets() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let access = fx.path().join("access.log");
    let yaml = config(
        &fx,
        https_port,
        admin_port,
        &[("alice", alice)],
        "",
        &format!(
            "log: {{ access: {{ format: json, path: \"{}\" }} }}\n",
            access.display()
        ),
    );
    let _edge = start(&fx, &yaml, https_port, admin_port);

    assert_eq!(
        curl(&format!("http://127.0.0.1:{admin_port}/healthz"), &[]).status,
        200
    );
    assert_eq!(
        curl(&format!("http://127.0.0.1:{admin_port}/readyz"), &[]).status,
        200
    );
    let r = curl(
        &format!(
            "https://hub.test:{https_port}/desktop/alice/vnc.html?autoconnect=1&password=hunter2"
        ),
        &[
            "-H",
            "Authorization: Bearer sekrit-token",
            "-H",
            "Cookie: hub_session=abc",
        ],
    );
    assert_eq!(r.status, 200);
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/alice/websockify"
    ))
    .await
    .unwrap();
    ws.send(Message::binary(vec![1u8; 1000])).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}

    wait_until(
        Duration::from_secs(10),
        "the WebSocket's access log line",
        || {
            std::fs::read_to_string(&access)
                .unwrap_or_default()
                .contains("\"websocket\"")
        },
    );
    let log = std::fs::read_to_string(&access).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let page = lines
        .iter()
        .find(|l| l["uri"].as_str().unwrap_or("").contains("vnc.html"))
        .expect("a line for the page");
    assert_eq!(page["status"], 200);
    assert_eq!(page["route"], "/desktop/{name}/");
    let ws_line = lines.iter().find(|l| l.get("websocket").is_some()).unwrap();
    assert_eq!(ws_line["status"], 101);
    assert!(ws_line["websocket"]["bytes_up"].as_u64().unwrap() >= 1000);
    assert!(ws_line["websocket"]["bytes_down"].as_u64().unwrap() >= 1000);
    for secret in ["hunter2", "sekrit-token", "hub_session", DESKTOP_PASSWORD] {
        assert!(!log.contains(secret), "{secret} leaked into the access log");
    }

    let m = curl(&format!("http://127.0.0.1:{admin_port}/metrics"), &[]).body;
    for needle in [
        // The prometheus crate writes labels in name order.
        "deskgate_requests_total{class=\"2xx\",route=\"/desktop/{name}/\"} 1",
        "deskgate_requests_total{class=\"1xx\",route=\"/desktop/{name}/\"} 1",
        "deskgate_websockets_total 1",
        "deskgate_websockets_open 0",
        "deskgate_upstream_response_seconds_count 2",
        "deskgate_config_generation",
        "deskgate_reloads_total 0",
    ] {
        assert!(m.contains(needle), "metrics lack `{needle}`:\n{m}");
    }
}

/// A desktop that sends its close frame and drops the connection (no TLS close_notify) ended
/// the session properly: the browser gets that close frame, and the log stays quiet (under
/// load, one normal close in a few hundred raced its connection's end into a warning).
#[tokio::test(flavor = "multi_thread")]
async fn a_desktop_closing_its_websocket_is_not_a_warning() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = config(&fx, https_port, admin_port, &[("alice", alice)], "", "");
    let edge = start(&fx, &yaml, https_port, admin_port);
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/alice/websockify"
    ))
    .await
    .unwrap();
    assert_eq!(ask(&mut ws, "whoami").await, "alice");
    ws.send(Message::text("bye")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        Ok(Some(Ok(Message::Close(_)))) => {}
        other => panic!("expected the desktop's close frame, got {other:?}"),
    }
    wait_until(Duration::from_secs(10), "the session to end", || {
        metric(admin_port, "deskgate_websockets_open") == 0
    });
    assert!(
        !edge.log_text().contains("ended an open WebSocket"),
        "{}",
        edge.log_text()
    );
}

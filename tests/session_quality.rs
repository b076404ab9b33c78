//! Session quality: both legs' network figures per open WebSocket on `/api/sessions` and in the
//! metrics, and a slow browser leg made in the test's own network namespaces (a veth pair shaped
//! with `tc ... tbf`) whose RTT and verdict move while an unshaped session stays "fine".

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::os::unix::io::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn sessions(admin_port: u16) -> Vec<Value> {
    let r = admin(admin_port, "GET", "/api/sessions", None, Some(ADMIN_TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["sessions"].as_array().unwrap().clone()
}

fn metric_line(text: &str, name: &str) -> f64 {
    metric_value(text, name).unwrap_or_else(|| panic!("no {name} in metrics"))
}

/// Waits until session `id` (or the only session) has a quality sample meeting `cond`.
fn wait_for_quality(
    admin_port: u16,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut last;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        last = sessions(admin_port);
        if cond(&Value::Array(last.clone())) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_legs_figures_reach_the_sessions_api_and_the_metrics() {
    let fx = Fixture::new();
    let (_edge, https_port, admin_port) = alice_with_admin(&fx);
    let url = format!("wss://hub.test:{https_port}/desktop/alice/websockify");
    let (mut ws, _) = ws_connect(&url).await.unwrap();
    assert_eq!(ask(&mut ws, "hello").await, "hello");

    // The API is the admin API's: the token is needed.
    assert_eq!(
        admin(admin_port, "GET", "/api/sessions", None, None).status,
        403
    );
    let found = tokio::task::spawn_blocking(move || {
        wait_for_quality(admin_port, "a sample with both legs", |v| {
            v[0]["quality"]["desktop"]["rtt_ms"].is_number()
        })
    })
    .await
    .unwrap();
    let q = &found[0]["quality"];
    eprintln!("loopback session: {q}");
    // Loopback: well under a millisecond each way, nothing lost, no backlog.
    assert!(q["browser"]["rtt_ms"].as_f64().unwrap() < 150.0, "{q}");
    assert_eq!(q["browser"]["loss_pct"], 0.0, "{q}");
    assert_eq!(q["verdict"], "fine", "{q}");
    assert_eq!(q["verdict_text"], "fine", "{q}");
    assert!(found[0]["quality_history"].as_array().unwrap().len() >= 1);
    assert!(found[0]["max_rate"].is_null());

    let text = metrics_text(admin_port);
    assert!(
        metric_line(
            &text,
            "deskgate_websocket_rtt_seconds_count{leg=\"browser\"}"
        ) >= 1.0
    );
    assert!(
        metric_line(
            &text,
            "deskgate_websocket_rtt_seconds_count{leg=\"desktop\"}"
        ) >= 1.0
    );
    assert!(metric_line(&text, "deskgate_websocket_backlog_bytes_count") >= 1.0);
    assert_eq!(
        metric_line(&text, "deskgate_websocket_sessions{verdict=\"fine\"}"),
        1.0
    );
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capped_route_keeps_its_desktop_under_the_cap() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = format!(
        "listeners:\n{}upstreams:\n{}websocket: {{ max_rate: 1MiB/s, burst: 64KiB }}\nroutes:\n  - {{ path: \"/desktop/alice/\", strip_prefix: true, upstream: desktop-alice }}\n  - {{ path: \"/free/\", strip_prefix: true, upstream: desktop-alice, websocket: {{ max_rate: none }} }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\n",
        fx.tls_listener(https_port),
        fx.desktop_upstream("desktop-alice", alice),
    );
    let _edge = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    let (mut capped, _) = ws_connect(&format!(
        "wss://hub.test:{https_port}/desktop/alice/websockify"
    ))
    .await
    .unwrap();
    let (mut free, _) = ws_connect(&format!("wss://hub.test:{https_port}/free/websockify"))
        .await
        .unwrap();
    // 16 MiB asked of the desktop: far more than the cap lets through while the test looks.
    capped
        .send(Message::text("stream 1024 16384"))
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(Ok(m)) = capped.next().await {
            got += m.len() as u64;
        }
        got
    });
    assert_eq!(ask(&mut free, "hello").await, "hello");
    let found = tokio::task::spawn_blocking(move || {
        wait_for_quality(admin_port, "two samples of the capped stream", |v| {
            v.as_array().unwrap().iter().any(|s| {
                s["route"] == "/desktop/alice/"
                    && s["quality_history"].as_array().unwrap().len() >= 3
                    && s["quality"]["rate_down"].as_u64().unwrap() > 0
            })
        })
    })
    .await
    .unwrap();
    let (capped_s, free_s) = (
        found
            .iter()
            .find(|s| s["route"] == "/desktop/alice/")
            .unwrap(),
        found.iter().find(|s| s["route"] == "/free/").unwrap(),
    );
    assert_eq!(capped_s["max_rate"], 1024 * 1024, "{capped_s}");
    assert!(free_s["max_rate"].is_null(), "{free_s}");
    // Between two samples (2 s apart, at least 1 s) the bucket lets through at most its rate
    // plus what it held: a bound, whatever the machine's speed.
    let most = 1024 * 1024 + 64 * 1024;
    for p in capped_s["quality_history"].as_array().unwrap() {
        assert!(p["rate_down"].as_u64().unwrap() <= most, "{p} over {most}");
    }
    // And from the session's start to its last read, at most the burst plus the rate.
    let age_ms = capped_s["last_activity"].as_u64().unwrap() - capped_s["since"].as_u64().unwrap();
    let bytes = capped_s["bytes_down"].as_u64().unwrap();
    assert!(
        bytes <= 64 * 1024 + 1024 * 1024 * (age_ms + 1) / 1000,
        "{bytes} bytes in {age_ms} ms"
    );
    eprintln!(
        "capped at 1 MiB/s: {bytes} bytes in {age_ms} ms; rates {:?}",
        capped_s["quality_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rate_down"].clone())
            .collect::<Vec<_>>()
    );
    reader.abort();
    free.close(None).await.ok();
}

/// Two network namespaces joined by a veth pair (10.231.0.1/30 on deskgate's side, .2 on the
/// browser's): the addresses exist only inside them, so no traffic leaves the machine. Deleted
/// on drop, also when the test fails; the thread that entered one goes back first.
struct Namespaces {
    server: String,
    client: String,
    original: std::fs::File,
}

const SERVER_ADDR: &str = "10.231.0.1";
const CLIENT_ADDR: &str = "10.231.0.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    fn create() -> Namespaces {
        let id = std::process::id();
        let ns = Namespaces {
            server: format!("dgq-srv-{id}"),
            client: format!("dgq-cli-{id}"),
            original: std::fs::File::open("/proc/thread-self/ns/net").unwrap(),
        };
        let (veth_s, veth_c) = (format!("dgqs{id}"), format!("dgqc{id}"));
        ip(&["netns", "add", &ns.server]);
        ip(&["netns", "add", &ns.client]);
        ip(&[
            "link", "add", &veth_s, "type", "veth", "peer", "name", &veth_c,
        ]);
        ip(&["link", "set", &veth_s, "netns", &ns.server]);
        ip(&["link", "set", &veth_c, "netns", &ns.client]);
        for (name, dev, addr) in [
            (&ns.server, &veth_s, SERVER_ADDR),
            (&ns.client, &veth_c, CLIENT_ADDR),
        ] {
            ip(&["-n", name, "link", "set", "lo", "up"]);
            ip(&["-n", name, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", name, "link", "set", dev, "up"]);
        }
        // The browser's leg, from deskgate towards it: 1 Mbit/s with up to 400 ms of queue
        // (this kernel has TBF, no netem). A desktop streaming into it fills the queue, which
        // raises the RTT deskgate's kernel measures on that connection.
        let tc = Command::new("ip")
            .args([
                "netns", "exec", &ns.server, "tc", "qdisc", "add", "dev", &veth_s,
            ])
            .args([
                "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms",
            ])
            .output()
            .unwrap();
        assert!(
            tc.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&tc.stderr)
        );
        ns
    }

    /// Moves the calling thread (and what it starts later: threads, child processes) into `name`.
    fn enter(name: &str) {
        let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        // SAFETY: setns on a namespace file we hold open; it only changes this thread's network
        // namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // SAFETY: as in `enter`, back to where the thread started.
        unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        for name in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The browser in its own namespace: opens the WebSocket to deskgate over the shaped veth,
/// asks the desktop for a long stream when told to, and reads whatever comes until `stop`.
fn slow_browser(
    ns: String,
    https_port: u16,
    start_streaming: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        Namespaces::enter(&ns);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect((SERVER_ADDR, https_port))
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut req = format!("wss://hub.test:{https_port}/desktop/alice/websockify")
                .into_client_request()
                .unwrap();
            req.headers_mut()
                .insert("Origin", "https://hub.test".parse().unwrap());
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", "binary".parse().unwrap());
            let connector = tokio_tungstenite::Connector::Rustls(client_tls(Arc::new(
                RecordingVerifier::default(),
            )));
            let (mut ws, _) =
                tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            ws.send(Message::text("hello"))
                .await
                .map_err(|e| e.to_string())?;
            let mut streaming = false;
            let mut received = 0u64;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                if !streaming && start_streaming.load(Ordering::Relaxed) {
                    // 16 MiB: more than the shaped link carries in the test's time.
                    ws.send(Message::text("stream 1024 16384"))
                        .await
                        .map_err(|e| e.to_string())?;
                    streaming = true;
                }
                match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                    Ok(Some(Ok(m))) => received += m.len() as u64,
                    Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                    Ok(None) => return Err("closed".into()),
                    Err(_) => {}
                }
            }
            Ok(received)
        });
        if let Err(e) = &result {
            eprintln!("slow browser: {e}");
        }
        result
    })
}

fn by_client<'a>(sessions: &'a [Value], client: &str) -> Option<&'a Value> {
    sessions.iter().find(|s| s["client"] == client)
}

#[test]
fn a_slow_browser_leg_shows_in_its_rtt_and_verdict_while_a_fast_one_stays_fine() {
    require("ip");
    require("tc");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test makes network namespaces: run it as root (`./dev test` in CI is)"
    );
    let namespaces = Namespaces::create();
    // From here this thread, deskgate, the desktop and curl live in the server's namespace.
    Namespaces::enter(&namespaces.server);
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = format!(
        "listeners:\n  - addr: \"0.0.0.0:{https_port}\"\n    tls:\n      certs:\n        - {{ cert: \"{}\", key: \"{}\" }}\nupstreams:\n{}routes:\n  - {{ path: \"/desktop/alice/\", strip_prefix: true, upstream: desktop-alice }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\n",
        fx.edge_cert.display(),
        fx.edge_key.display(),
        fx.desktop_upstream("desktop-alice", alice),
    );
    let _edge = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);

    // The fast session: over the server namespace's loopback.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut fast = rt.block_on(async {
        let url = format!("wss://hub.test:{https_port}/desktop/alice/websockify");
        let (mut ws, _) = ws_connect(&url).await.unwrap();
        assert_eq!(ask(&mut ws, "hello").await, "hello");
        ws
    });

    let (start, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let browser = slow_browser(
        namespaces.client.clone(),
        https_port,
        start.clone(),
        stop.clone(),
    );
    let before = wait_for_quality(admin_port, "both sessions measured", |v| {
        assert!(
            !browser.is_finished(),
            "the slow browser ended (its error is above)"
        );
        let v = v.as_array().unwrap();
        v.len() == 2 && v.iter().all(|s| s["quality"]["verdict"].is_string())
    });
    let slow_before = by_client(&before, CLIENT_ADDR).expect("the namespaced browser's session")
        ["quality"]
        .clone();
    eprintln!("slow leg before streaming: {slow_before}");
    assert_eq!(slow_before["verdict"], "fine", "{slow_before}");

    start.store(true, Ordering::Relaxed);
    let after = wait_for_quality(admin_port, "the shaped leg judged slow", |v| {
        by_client(v.as_array().unwrap(), CLIENT_ADDR)
            .is_some_and(|s| s["quality"]["verdict"] == "browser_slow")
    });
    let slow = by_client(&after, CLIENT_ADDR).unwrap();
    let q = &slow["quality"];
    eprintln!("slow leg while streaming: {q}");
    let fast_q = &by_client(&after, "127.0.0.1").expect("the loopback session")["quality"];
    eprintln!("fast leg meanwhile: {fast_q}");
    assert_eq!(q["verdict_text"], "browser's network slow", "{q}");
    assert!(!q["why"].as_array().unwrap().is_empty(), "{q}");
    let (rtt_before, rtt_after) = (
        slow_before["browser"]["rtt_ms"].as_f64().unwrap(),
        q["browser"]["rtt_ms"].as_f64().unwrap(),
    );
    assert!(rtt_after > rtt_before, "{rtt_before} -> {rtt_after}");
    // The desktop leg is the server namespace's loopback: not what is slow.
    assert!(q["desktop"]["rtt_ms"].as_f64().unwrap() < 50.0, "{q}");
    // A 1 Mbit/s link delivers at most ~125 kB/s, whatever the desktop sends.
    assert!(
        q["browser"]["delivery_rate"].as_u64().unwrap() < 1_000_000,
        "{q}"
    );
    assert_eq!(fast_q["verdict"], "fine", "{fast_q}");
    let history = slow["quality_history"].as_array().unwrap();
    assert!(history.len() >= 2, "{history:?}");

    let text = metrics_text(admin_port);
    assert_eq!(
        metric_line(
            &text,
            "deskgate_websocket_sessions{verdict=\"browser_slow\"}"
        ),
        1.0
    );
    let count = metric_line(
        &text,
        "deskgate_websocket_rtt_seconds_count{leg=\"browser\"}",
    );
    let under_150ms = metric_line(
        &text,
        "deskgate_websocket_rtt_seconds_bucket{leg=\"browser\",le=\"0.15\"}",
    );
    assert!(
        under_150ms < count,
        "no browser RTT sample above 150 ms:\n{text}"
    );

    // The page a support person sees now, in Chromium: docs/session-quality.png is a copy.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("session-quality.png");
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/quality.mjs"
        ))
        .arg(format!("http://127.0.0.1:{admin_port}/ui/"))
        .arg(ADMIN_TOKEN)
        .arg(&shot)
        .arg("30000")
        .output()
        .expect("node (./dev test installs it and playwright-core)");
    let raw = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(raw.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(
        seen["slowShown"],
        true,
        "{seen:#} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen["fineShown"], true, "{seen:#}");
    assert_eq!(seen["slowText"], "browser's network slow", "{seen:#}");
    assert!(
        seen["why"].as_str().is_some_and(|w| w.contains("browser")),
        "{seen:#}"
    );
    assert!(shot.exists());

    stop.store(true, Ordering::Relaxed);
    let received = browser.join().unwrap().unwrap();
    eprintln!("the slow browser received {received} bytes");
    rt.block_on(async { fast.close(None).await.ok() });
}

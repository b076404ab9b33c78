//! Several deskgate instances sharing runtime routes through a real redis-server.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start(dir: &std::path::Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed by ./dev test");
        wait_port(port);
        Redis {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }
    /// A new Redis with its data in the fixture's `redis/` folder, on a free port.
    fn start_in(fx: &Fixture) -> Redis {
        let dir = fx.path().join("redis");
        std::fs::create_dir_all(&dir).unwrap();
        Redis::start(&dir, free_port())
    }
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_edge(fx: &Fixture, name: &str, redis_port: u16) -> Edge {
    let (https_port, admin) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\nroute_store: {{ redis: \"redis://127.0.0.1:{redis_port}/0\", key_prefix: \"test:\" }}\ndynamic:\n  tls: {{ verify: false }}\n  strip_prefix: true\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
        fx.tls_listener(https_port),
        fx.password_file.display()
    );
    let d = Deskgate::start_with_admin(fx.path(), name, &yaml, https_port, admin);
    Edge { d, admin }
}

fn post(e: &Edge, prefix: &str, target: &str) -> u16 {
    admin(
        e.admin,
        "POST",
        &format!("/api/routes{prefix}"),
        Some(&format!(r#"{{"target": "https://{target}"}}"#)),
        Some(ADMIN_TOKEN),
    )
    .status
}

/// The route's `last_activity` as `e`'s admin API reports it, in Unix ms.
fn last_activity(e: &Edge, prefix: &str) -> u64 {
    let r = admin(
        e.admin,
        "GET",
        &format!("/api/routes{prefix}"),
        None,
        Some(ADMIN_TOKEN),
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    deskgate::hub::runtime_routes::parse_iso8601(v["last_activity"].as_str().unwrap()).unwrap()
}

/// Waits until `cond` holds on every edge; returns how long that took.
fn propagate(edges: &[&Edge], what: &str, cond: impl Fn(&Edge) -> bool) -> Duration {
    let started = Instant::now();
    wait_until(Duration::from_secs(15), what, || {
        edges.iter().all(|e| cond(e))
    });
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_edges_share_routes_through_redis_and_survive_its_outage() {
    let fx = Fixture::new();
    let mut redis = Redis::start_in(&fx);
    let alice = fx.desktop("alice");
    let bob = fx.desktop("bob");
    let e1 = start_edge(&fx, "edge1", redis.port);
    let e2 = start_edge(&fx, "edge2", redis.port);
    let e3 = start_edge(&fx, "edge3", redis.port);
    let all = [&e1, &e2, &e3];
    propagate(&all, "all edges in sync with Redis", |e| {
        metric(e.admin, "deskgate_route_store_up") == 1
    });

    // Added via 1, served by 2 and 3.
    assert_eq!(post(&e1, "/desktop/alice", &alice.to_string()), 201);
    let t_add = propagate(&[&e2, &e3], "the route on edges 2 and 3", |e| {
        served(e, "/desktop/alice").as_deref() == Some("alice")
    });
    // Deleted via 3, gone on 1 and 2.
    assert_eq!(post(&e3, "/desktop/bob", &bob.to_string()), 201);
    propagate(&all, "bob everywhere", |e| {
        served(e, "/desktop/bob").is_some()
    });
    assert_eq!(
        admin(
            e3.admin,
            "DELETE",
            "/api/routes/desktop/bob",
            None,
            Some(ADMIN_TOKEN)
        )
        .status,
        204
    );
    let t_del = propagate(&[&e1, &e2], "bob gone on edges 1 and 2", |e| {
        served(e, "/desktop/bob").is_none()
    });
    println!("propagation through Redis: add {t_add:?}, delete {t_del:?}");

    // WebSocket frames through edge 2 move last_activity as seen through edge 1.
    let last = |e: &Edge| last_activity(e, "/desktop/alice");
    let before = last(&e1);
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{}/desktop/alice/websockify",
        e2.d.https_port
    ))
    .await
    .unwrap();
    let frames_from = deskgate::telemetry::activity::now_ms();
    for i in 0..5u8 {
        ws.send(Message::binary(vec![i; 32])).await.unwrap();
        ws.next().await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    wait_until(
        Duration::from_secs(15),
        "edge 1 to see edge 2's WebSocket activity",
        || last(&e1) >= frames_from + 1000,
    );
    assert!(last(&e1) > before);

    // Redis down: every edge keeps serving what it has, writes get 503.
    redis.stop();
    propagate(&all, "all edges to notice the outage", |e| {
        metric(e.admin, "deskgate_route_store_up") == 0
    });
    for e in all {
        assert_eq!(served(e, "/desktop/alice").as_deref(), Some("alice"));
        assert_eq!(post(e, "/desktop/carol", &bob.to_string()), 503);
        assert_eq!(
            admin(
                e.admin,
                "DELETE",
                "/api/routes/desktop/alice",
                None,
                Some(ADMIN_TOKEN)
            )
            .status,
            503
        );
    }

    // Redis back with its data: everything written before is still served everywhere, and a
    // new route propagates to all three.
    let _redis = Redis::start(&redis.dir, redis.port);
    propagate(&all, "all edges to resync", |e| {
        metric(e.admin, "deskgate_route_store_up") == 1
    });
    for e in all {
        assert_eq!(served(e, "/desktop/alice").as_deref(), Some("alice"));
        assert!(served(e, "/desktop/bob").is_none());
    }
    assert_eq!(post(&e2, "/desktop/dave", &bob.to_string()), 201);
    propagate(&all, "dave everywhere", |e| {
        served(e, "/desktop/dave").as_deref() == Some("bob")
    });
}

/// `cmdstat_<name>`'s call count from the server's INFO commandstats (0 if never called).
fn redis_calls(port: u16, name: &str) -> u64 {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_steady_activity_sync_reads_only_what_moved() {
    let fx = Fixture::new();
    let redis = Redis::start_in(&fx);
    let alice = fx.desktop("alice");
    let e1 = start_edge(&fx, "edge1", redis.port);
    let e2 = start_edge(&fx, "edge2", redis.port);
    propagate(&[&e1, &e2], "both edges in sync with Redis", |e| {
        metric(e.admin, "deskgate_route_store_up") == 1
    });
    for i in 0..50 {
        assert_eq!(
            post(&e1, &format!("/desktop/u{i}"), &alice.to_string()),
            201
        );
    }
    propagate(&[&e2], "the 50th route on edge 2", |e| {
        served(e, "/desktop/u49").as_deref() == Some("alice")
    });

    // Each edge reads activity once a second: the routes whose time moved lately
    // (ZRANGEBYSCORE), the whole set only after connecting and once a minute (ZRANGE). Before,
    // every round read the whole activity hash.
    let (reads, whole_reads) = (
        redis_calls(redis.port, "zrangebyscore"),
        redis_calls(redis.port, "zrange"),
    );
    wait_until(Duration::from_secs(30), "ten sync rounds", || {
        redis_calls(redis.port, "zrangebyscore") >= reads + 10
    });
    let whole_reads_since = redis_calls(redis.port, "zrange") - whole_reads;
    // At most the once-a-minute whole read, once per edge.
    assert!(
        whole_reads_since <= 2,
        "{whole_reads_since} whole reads in ten sync rounds"
    );

    // Traffic through edge 2 on one route still reaches edge 1 through the change log.
    let last = |e: &Edge| last_activity(e, "/desktop/u7");
    let before = last(&e1);
    let from = deskgate::telemetry::activity::now_ms();
    assert_eq!(served(&e2, "/desktop/u7").as_deref(), Some("alice"));
    wait_until(
        Duration::from_secs(15),
        "edge 1 to see edge 2's request",
        || last(&e1) >= from,
    );
    assert!(last(&e1) > before);
}

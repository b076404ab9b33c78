//! Losing one piece of a highly available set-up: Redis's primary under deskgate edges that
//! find it through Redis Sentinel, and one of two `deskgate chp` replicas that share
//! JupyterHub's routes through Redis. Real redis-server/sentinel processes on loopback.

mod common;
use common::redis::{RedisProcess, SentinelSet};
use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MASTER: &str = "hub";
const REDIS_PASSWORD: &str = "redis-pw-for-tests";

fn sentinel_edge(fx: &Fixture, name: &str, sentinels: &[String], extra: &str) -> Edge {
    let (https_port, admin) = (free_port(), free_port());
    let password_file = fx.path().join("redis.password");
    std::fs::write(&password_file, format!("{REDIS_PASSWORD}\n")).unwrap();
    let addrs: Vec<String> = sentinels.iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\nroute_store:\n  key_prefix: \"test:\"\n  sentinel: {{ master: {MASTER}, addrs: [{}], password_file: \"{}\" }}\n{extra}dynamic:\n  tls: {{ verify: false }}\n  strip_prefix: true\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
        fx.tls_listener(https_port),
        addrs.join(", "),
        password_file.display(),
        fx.password_file.display()
    );
    let d = Deskgate::start_with_admin(fx.path(), name, &yaml, https_port, admin);
    Edge { d, admin }
}

fn post(admin_port: u16, prefix: &str, target: &str) -> u16 {
    admin(
        admin_port,
        "POST",
        &format!("/api/routes{prefix}"),
        Some(&format!(r#"{{"target": "https://{target}"}}"#)),
        Some(ADMIN_TOKEN),
    )
    .status
}

/// The prefixes an edge's routes API lists.
fn listed(admin_port: u16) -> BTreeSet<String> {
    let r = admin(admin_port, "GET", "/api/routes", None, Some(ADMIN_TOKEN));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn store_up(e: &Edge) -> bool {
    metric(e.admin, "deskgate_route_store_up") == 1
}

/// One write through the admin API during the failover: which edge, what, when, the answer.
struct Write {
    edge: usize,
    prefix: String,
    at: Instant,
    status: u16,
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_follow_a_sentinel_failover_without_losing_acknowledged_routes_or_websockets() {
    let fx = Fixture::new();
    let mut set = SentinelSet::start(&fx.path().join("redis"), MASTER, REDIS_PASSWORD);
    let alice = fx.desktop("alice");
    let e1 = sentinel_edge(&fx, "edge1", &set.sentinel_addrs(), "");
    let e2 = sentinel_edge(&fx, "edge2", &set.sentinel_addrs(), "");
    let edges = [&e1, &e2];
    wait_until(
        Duration::from_secs(30),
        "both edges in sync with the primary",
        || edges.iter().all(|e| store_up(e)),
    );

    // Routes through either edge, each served by the other.
    for i in 0..10 {
        let (via, other) = if i % 2 == 0 { (&e1, &e2) } else { (&e2, &e1) };
        assert_eq!(
            post(via.admin, &format!("/desktop/r{i}"), &alice.to_string()),
            201
        );
        wait_until(
            Duration::from_secs(15),
            "the route on the other edge",
            || served(other, &format!("/desktop/r{i}")).as_deref() == Some("alice"),
        );
    }
    let (mut ws, _) = ws_connect(&format!(
        "wss://hub.test:{}/desktop/r0/websockify",
        e1.d.https_port
    ))
    .await
    .unwrap();
    assert_eq!(
        ask(&mut ws, "before the failover").await,
        "before the failover"
    );

    // Writes keep coming through both edges while the primary dies.
    let writes: Arc<Mutex<Vec<Write>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (writes, stop) = (writes.clone(), stop.clone());
        let admins = [e1.admin, e2.admin];
        let target = alice.to_string();
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(90) {
                let edge = i % 2;
                let prefix = format!("/desktop/w{i}");
                let status = post(admins[edge], &prefix, &target);
                writes.lock().unwrap().push(Write {
                    edge,
                    prefix,
                    at: Instant::now(),
                    status,
                });
                i += 1;
            }
        })
    };
    wait_until(Duration::from_secs(15), "writes flowing", || {
        writes
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w.status == 201)
            .count()
            >= 10
    });

    let replica_port = set.replica.port;
    set.primary.kill();
    let killed = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the sentinels to promote the replica",
        || set.agreed_primary() == Some(replica_port),
    );
    let promoted = killed.elapsed();
    // Both edges accept writes again: a few acknowledged through each after the kill.
    wait_until(
        Duration::from_secs(60),
        "writes accepted again through both edges",
        || {
            let w = writes.lock().unwrap();
            (0..2).all(|edge| {
                w.iter()
                    .filter(|w| w.edge == edge && w.at > killed && w.status == 201)
                    .count()
                    >= 3
            })
        },
    );
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    wait_until(
        Duration::from_secs(30),
        "both edges following the new primary",
        || edges.iter().all(|e| store_up(e)),
    );
    let resynced = killed.elapsed();

    let writes = std::mem::take(&mut *writes.lock().unwrap());
    let after_kill: Vec<&Write> = writes.iter().filter(|w| w.at > killed).collect();
    let refused = after_kill.iter().filter(|w| w.status == 503).count();
    let odd: Vec<(&str, u16)> = writes
        .iter()
        .filter(|w| w.status != 201 && w.status != 503)
        .map(|w| (w.prefix.as_str(), w.status))
        .collect();
    assert!(
        odd.is_empty(),
        "writes answered neither 201 nor 503: {odd:?}"
    );
    for (edge, e) in edges.iter().enumerate() {
        let back = after_kill
            .iter()
            .find(|w| w.edge == edge && w.status == 201)
            .map(|w| w.at - killed)
            .unwrap();
        println!(
            "failover: edge {} accepts writes again {back:?} after the primary's SIGKILL",
            edge + 1
        );
        assert!(e
            .d
            .log_text()
            .contains(&format!("127.0.0.1:{replica_port}")));
    }
    println!(
        "failover: sentinels agree on the replica {promoted:?} after the SIGKILL, both edges in sync with it by {resynced:?}; {refused} of {} writes after the kill answered 503",
        after_kill.len()
    );
    assert!(
        refused > 0,
        "no write was refused while there was no primary"
    );

    // Every acknowledged route is in the promoted primary and on both edges.
    let acknowledged: BTreeSet<String> = writes
        .iter()
        .filter(|w| w.status == 201)
        .map(|w| w.prefix.clone())
        .chain((0..10).map(|i| format!("/desktop/r{i}")))
        .collect();
    let in_redis: BTreeSet<String> = set
        .replica
        .cli(&["HKEYS", "test:routes"])
        .lines()
        .map(str::to_string)
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&in_redis).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost in the failover: {lost:?}"
    );
    for e in edges {
        wait_until(
            Duration::from_secs(15),
            "every acknowledged route on the edge",
            || acknowledged.is_subset(&listed(e.admin)),
        );
        assert_eq!(served(e, "/desktop/r9").as_deref(), Some("alice"));
    }
    println!(
        "failover: {} acknowledged routes, none lost (WAIT 1 after every write)",
        acknowledged.len()
    );

    // The WebSocket opened before the failover never noticed it.
    assert_eq!(
        ask(&mut ws, "after the failover").await,
        "after the failover"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_starts_with_its_state_file_when_no_sentinel_answers() {
    let fx = Fixture::new();
    let alice = fx.desktop("alice");
    let state = fx.path().join("routes.json");
    let state_line = format!("state_file: \"{}\"\n", state.display());
    // The state file a previous run left: one route.
    {
        let (https_port, admin_port) = (free_port(), free_port());
        let yaml = format!(
            "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\n{state_line}dynamic:\n  tls: {{ verify: false }}\n  strip_prefix: true\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
            fx.tls_listener(https_port),
            fx.password_file.display()
        );
        let _solo = Deskgate::start_with_admin(fx.path(), "solo", &yaml, https_port, admin_port);
        assert_eq!(post(admin_port, "/desktop/alice", &alice.to_string()), 201);
        // Written off the request path: wait for it before the SIGKILL.
        wait_until(
            Duration::from_secs(10),
            "the route in the state file",
            || std::fs::read_to_string(&state).is_ok_and(|t| t.contains("/desktop/alice")),
        );
    }

    // Nothing answers on the sentinels' ports: the edge starts anyway, says so once, serves
    // the state file's route and refuses writes.
    let ports = [free_port(), free_port(), free_port()];
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let edge = sentinel_edge(&fx, "edge", &addrs, &state_line);
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("alice"));
    assert_eq!(post(edge.admin, "/desktop/bob", &alice.to_string()), 503);
    assert!(!store_up(&edge));
    wait_until(Duration::from_secs(15), "the edge to log why", || {
        edge.d
            .log_text()
            .contains("no primary from master `hub` via sentinels")
    });
    let log = edge.d.log_text();
    assert!(log.contains("serving the state file's 1 routes"), "{log}");
    assert!(
        !log.contains(REDIS_PASSWORD),
        "the password leaked into the log"
    );

    // The sentinels (and their Redis) come up: the edge joins without a restart, and from
    // then on the store's table is the truth (it is empty here).
    let _set = SentinelSet::start_on(&fx.path().join("redis"), MASTER, REDIS_PASSWORD, &ports);
    wait_until(Duration::from_secs(30), "the edge in sync", || {
        store_up(&edge)
    });
    assert_eq!(post(edge.admin, "/desktop/bob", &alice.to_string()), 201);
    assert_eq!(served(&edge, "/desktop/bob").as_deref(), Some("alice"));
    assert_eq!(served(&edge, "/desktop/alice"), None);
}

/// `deskgate chp` with a config file laid under its flags; killed on drop.
struct ChpReplica {
    child: Option<Child>,
    port: u16,
    api: u16,
}

impl ChpReplica {
    fn start(dir: &Path, name: &str, config: &Path, port: u16, api: u16) -> ChpReplica {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .arg("chp")
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--api-ip", "127.0.0.1", "--api-port", &api.to_string()])
            .args(["--insecure", "--no-include-prefix", "-c"])
            .arg(config)
            .env("CONFIGPROXY_AUTH_TOKEN", ADMIN_TOKEN)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port);
        wait_port(api);
        ChpReplica {
            child: Some(child),
            port,
            api,
        }
    }

    fn get(&self, path: &str) -> CurlResponse {
        curl(&format!("http://127.0.0.1:{}{path}", self.port), &[])
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChpReplica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn two_chp_replicas_share_jupyterhubs_routes_and_survive_losing_one() {
    let fx = Fixture::new();
    let redis = RedisProcess::server(&fx.path().join("redis"), free_port(), None, None);
    let config = fx.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "route_store: {{ redis: \"redis://127.0.0.1:{}/0\", key_prefix: \"jhub:\" }}\ndynamic:\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
            redis.port,
            fx.password_file.display()
        ),
    )
    .unwrap();
    let (a_port, a_api) = (free_port(), free_port());
    let mut a = ChpReplica::start(fx.path(), "replica-a", &config, a_port, a_api);
    let b = ChpReplica::start(fx.path(), "replica-b", &config, free_port(), free_port());

    // The hub talks to replica A only (in production: to a Service in front of both).
    let users = ["alice", "bob", "carol"];
    let targets: Vec<String> = users
        .iter()
        .map(|u| format!("https://{}", fx.desktop(u)))
        .collect();
    for (user, target) in users.iter().zip(&targets) {
        jupyterhub(
            &format!("http://127.0.0.1:{}", a.api),
            &[
                "add",
                &format!("/user/{user}/"),
                target,
                &format!(r#"{{"user": "{user}"}}"#),
            ],
        );
    }
    let serves_all = |r: &ChpReplica| {
        users
            .iter()
            .all(|u| r.get(&format!("/user/{u}/whoami")).body.trim() == *u)
    };
    wait_until(
        Duration::from_secs(15),
        "replica B to serve A's routes",
        || serves_all(&b),
    );

    // A dies. B serves every route, and the hub's route check through B's API (what
    // `Proxy.check_routes` compares: `get_all_routes`) finds each one, with its data.
    a.kill();
    assert!(serves_all(&b));
    let routes = jupyterhub(&format!("http://127.0.0.1:{}", b.api), &["get_all"]);
    for (user, target) in users.iter().zip(&targets) {
        let route = &routes[&format!("/user/{user}/")];
        assert_eq!(route["target"], target.as_str(), "{routes}");
        assert_eq!(route["data"]["user"], *user, "{routes}");
    }

    // A comes back on its ports and serves the same routes, without the hub re-adding them.
    let a = ChpReplica::start(fx.path(), "replica-a-again", &config, a_port, a_api);
    wait_until(
        Duration::from_secs(15),
        "restarted A to serve every route",
        || serves_all(&a),
    );
    let again = jupyterhub(&format!("http://127.0.0.1:{}", a.api), &["get_all"]);
    for (user, target) in users.iter().zip(&targets) {
        let route = &again[&format!("/user/{user}/")];
        assert_eq!(route["target"], target.as_str(), "{again}");
        assert_eq!(route["data"]["user"], *user, "{again}");
    }
}

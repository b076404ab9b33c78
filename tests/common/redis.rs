//! Real Redis processes on loopback for the shared route store: one server, or a primary, its
//! replica and three sentinels (Debian's `redis-server`, which is also Sentinel with
//! `--sentinel`). Readiness is polled with `redis-cli` (`INFO replication`, `SENTINEL ...`).

use super::{free_port, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A redis-server (or sentinel) process, killed on drop.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    password: Option<String>,
}

impl RedisProcess {
    /// A server on `port`, keeping its data in `dir`; a replica of `primary` when given.
    pub fn server(dir: &Path, port: u16, password: Option<&str>, primary: Option<u16>) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            // A replica's first sync right away, not after the 5 s diskless default.
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(dir);
        if let Some(p) = password {
            cmd.args(["--requirepass", p, "--masterauth", p]);
        }
        if let Some(primary) = primary {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        Self::spawn(cmd, port, dir, password)
    }

    /// A sentinel watching `primary` as `master`, with short timeouts so a test fails over in
    /// seconds: down after 1 s without answers, 5 s failover timeout, quorum 2.
    pub fn sentinel(
        dir: &Path,
        port: u16,
        master: &str,
        primary: u16,
        password: Option<&str>,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // Sentinel rewrites its config file as it learns, so each has its own, writable.
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {master} 127.0.0.1 {primary} 2\nsentinel down-after-milliseconds {master} 1000\nsentinel failover-timeout {master} 5000\nsentinel parallel-syncs {master} 1\n",
            dir.display()
        );
        if let Some(p) = password {
            text.push_str(&format!("sentinel auth-pass {master} {p}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        Self::spawn(cmd, port, dir, None)
    }

    fn spawn(mut cmd: Command, port: u16, dir: &Path, password: Option<&str>) -> Self {
        super::require("redis-server");
        let log = std::fs::File::create(dir.join(format!("redis-{port}.log"))).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("redis-server is installed by ./dev test");
        super::wait_port(port);
        RedisProcess {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            password: password.map(str::to_string),
        }
    }

    /// `redis-cli` against this process; stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, self.password.as_deref(), args)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no shutdown save, no goodbye to replicas or sentinels.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn cli(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(p) = password {
        // Through the environment, so it is not on a command line.
        cmd.env("REDISCLI_AUTH", p);
    }
    let out = cmd
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A primary, one replica and three sentinels watching them as `master`.
pub struct SentinelSet {
    pub master: String,
    pub primary: RedisProcess,
    pub replica: RedisProcess,
    pub sentinels: Vec<RedisProcess>,
    pub password: String,
}

impl SentinelSet {
    /// Started on the given ports (sentinel ports may be chosen in advance by the test).
    pub fn start_on(dir: &Path, master: &str, password: &str, sentinel_ports: &[u16]) -> Self {
        let primary = RedisProcess::server(&dir.join("primary"), free_port(), Some(password), None);
        let replica = RedisProcess::server(
            &dir.join("replica"),
            free_port(),
            Some(password),
            Some(primary.port),
        );
        wait_until(Duration::from_secs(30), "the replica in sync", || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let sentinels: Vec<RedisProcess> = sentinel_ports
            .iter()
            .map(|&p| {
                RedisProcess::sentinel(
                    &dir.join("sentinels"),
                    p,
                    master,
                    primary.port,
                    Some(password),
                )
            })
            .collect();
        let set = SentinelSet {
            master: master.to_string(),
            primary,
            replica,
            sentinels,
            password: password.to_string(),
        };
        // Sentinels find each other through hello messages on the primary (every 2 s) and the
        // replica through the primary's INFO; a failover needs both.
        let others = (sentinel_ports.len() - 1).to_string();
        wait_until(
            Duration::from_secs(60),
            "the sentinels to know each other and the replica",
            || {
                set.sentinels.iter().all(|s| {
                    let info = field_map(&s.cli(&["SENTINEL", "master", master]));
                    info.get("num-other-sentinels") == Some(&others)
                        && info.get("num-slaves").map(String::as_str) == Some("1")
                })
            },
        );
        set
    }

    pub fn start(dir: &Path, master: &str, password: &str) -> Self {
        let ports = [free_port(), free_port(), free_port()];
        Self::start_on(dir, master, password, &ports)
    }

    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The port every sentinel names as the primary now, if they agree.
    pub fn agreed_primary(&self) -> Option<u16> {
        let answers: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| s.cli(&["SENTINEL", "get-master-addr-by-name", &self.master]))
            .collect();
        let port: u16 = answers[0].lines().nth(1)?.trim().parse().ok()?;
        answers
            .iter()
            .all(|a| a.lines().nth(1).map(str::trim) == Some(&port.to_string()[..]))
            .then_some(port)
    }
}

/// `redis-cli`'s answer to `SENTINEL master` (alternating lines of name and value) as a map.
fn field_map(text: &str) -> std::collections::HashMap<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim().to_string(), c[1].trim().to_string()))
        .collect()
}

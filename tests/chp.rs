//! `deskgate chp`: configurable-http-proxy's command line and semantics, exercised the way
//! CHP's users run it: flags, `CONFIGPROXY_AUTH_TOKEN`, the routes API, error targets, pid
//! files, signals; then JupyterHub's own proxy test suites and a real JupyterHub.

mod common;
use common::hub::spawn_hub;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `deskgate chp` on loopback ports.
struct Chp {
    child: Child,
    port: u16,
    api: u16,
    log: PathBuf,
}

impl Chp {
    fn start(dir: &Path, flags: &[&str], token: Option<&str>) -> Chp {
        let (port, api) = (free_port(), free_port());
        let log = dir.join(format!("chp-{port}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("chp")
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--api-ip", "127.0.0.1", "--api-port", &api.to_string()])
            .args(flags)
            .env_remove("CONFIGPROXY_AUTH_TOKEN")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit());
        if let Some(t) = token {
            cmd.env("CONFIGPROXY_AUTH_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("deskgate chp starts");
        wait_port(port);
        wait_port(api);
        // Something listening is not proof that it is this deskgate.
        if let Some(status) = child.try_wait().unwrap() {
            panic!("deskgate chp exited with {status} after its ports opened");
        }
        Chp {
            child,
            port,
            api,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> CurlResponse {
        admin(self.api, method, path, body, Some(ADMIN_TOKEN))
    }

    /// SIGTERM, then the exit status (bounded: CHP exits at once, so must we).
    fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        let mut status = None;
        wait_until(Duration::from_secs(15), "deskgate chp to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }
}

impl Drop for Chp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn routes_api_and_proxying_follow_configurable_http_proxy() {
    let fx = Fixture::new();
    let (hub, _) = spawn_hub();
    let pid_file = fx.path().join("chp.pid");
    let mut chp = Chp::start(
        fx.path(),
        &[
            "--default-target",
            &format!("http://{hub}"),
            "--error-target",
            &format!("http://{hub}/hub/error"),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--log-level=debug",
        ],
        Some(ADMIN_TOKEN),
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        chp.child.id().to_string()
    );

    // The token guards the API; the default target answers `/`.
    assert_eq!(admin(chp.api, "GET", "/api/routes", None, None).status, 403);
    assert_eq!(
        admin(chp.api, "GET", "/api/routes", None, Some("wrong")).status,
        403
    );
    let routes: serde_json::Value =
        serde_json::from_str(&chp.api("GET", "/api/routes", None).body).unwrap();
    assert_eq!(routes["/"]["target"], format!("http://{hub}"));
    assert_eq!(curl(&chp.url("/anything"), &[]).body, "hub");
    assert_eq!(
        curl(&chp.url("/_chp_healthz"), &[]).body,
        r#"{"status":"OK"}"#
    );

    // Keys are URL-decoded with one trailing slash dropped; GET of a key, 404 for others.
    let r = chp.api(
        "POST",
        "/api/routes/user/has%20space/",
        Some(r#"{"target": "http://127.0.0.1:9", "jupyterhub": true}"#),
    );
    assert_eq!(r.status, 201);
    let one: serde_json::Value =
        serde_json::from_str(&chp.api("GET", "/api/routes/user/has%20space", None).body).unwrap();
    assert_eq!(one["target"], "http://127.0.0.1:9");
    assert_eq!(one["jupyterhub"], true);
    assert!(one["last_activity"].as_str().unwrap().ends_with('Z'));
    assert_eq!(chp.api("GET", "/api/routes/user/nobody", None).status, 404);

    // Bad bodies and methods.
    assert_eq!(
        chp.api("POST", "/api/routes/x", Some("{not json")).status,
        400
    );
    assert_eq!(
        chp.api("POST", "/api/routes/x", Some(r#"{"target": 5}"#))
            .status,
        400
    );
    assert_eq!(chp.api("PUT", "/api/routes/x", Some("{}")).status, 405);
    assert_eq!(chp.api("DELETE", "/api/routes/x", None).status, 404);

    // A target that refuses: 503 rendered by the error target, which is told the URL.
    let r = curl(&chp.url("/user/has%20space/tree?x=1"), &[]);
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body,
        "error page for /hub/error/503?url=%2Fuser%2Fhas%2520space%2Ftree%3Fx%3D1"
    );
    // Whole-segment match: `/user/has spacex` is not under the route; without a route for
    // `/` (deleted through `/api/routes/`), 404 from the error target.
    assert_eq!(chp.api("DELETE", "/api/routes/", None).status, 204);
    let r = curl(&chp.url("/user/has%20spacex"), &[]);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        "error page for /hub/error/404?url=%2Fuser%2Fhas%2520spacex"
    );

    // ?inactive_since= (and CHP's camelCase spelling) filters by last activity.
    let future = "2999-01-01T00:00:00Z";
    let idle: serde_json::Value = serde_json::from_str(
        &chp.api("GET", &format!("/api/routes?inactiveSince={future}"), None)
            .body,
    )
    .unwrap();
    assert!(idle.get("/user/has space").is_some(), "{idle}");
    let idle: serde_json::Value = serde_json::from_str(
        &chp.api(
            "GET",
            "/api/routes?inactive_since=2000-01-01T00:00:00Z",
            None,
        )
        .body,
    )
    .unwrap();
    assert_eq!(idle, serde_json::json!({}));
    assert_eq!(
        chp.api("GET", "/api/routes?inactive_since=yesterday", None)
            .status,
        400
    );

    // SIGTERM: exits promptly and removes its pid file.
    assert!(chp.terminate().success());
    assert!(!pid_file.exists(), "pid file left behind");
    assert!(
        std::fs::read_to_string(&chp.log)
            .unwrap()
            .contains("Proxying"),
        "logs go to stdout"
    );
}

#[test]
fn insecure_reaches_self_signed_targets_with_settings_from_a_config_file() {
    let fx = Fixture::new();
    let alice = fx.desktop("alice");
    // The hub's config adds what CHP cannot express: the desktops' Basic auth.
    let config = fx.path().join("hub.yaml");
    std::fs::write(
        &config,
        format!(
            "dynamic:\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
            fx.password_file.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let route = format!(r#"{{"target": "https://{alice}/"}}"#);

    let chp = Chp::start(
        fx.path(),
        &[
            "--insecure",
            "--no-include-prefix",
            "-c",
            config,
            "--custom-header",
            "X-Hub-Edge: deskgate",
        ],
        None,
    );
    // No CONFIGPROXY_AUTH_TOKEN: the API is open, as with CHP.
    assert_eq!(
        admin(
            chp.api,
            "POST",
            "/api/routes/user/alice",
            Some(&route),
            None
        )
        .status,
        201
    );
    let r = curl(&chp.url("/user/alice/whoami"), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));
    let headers = curl(
        &chp.url("/user/alice/headers"),
        &["-H", "X-Forwarded-For: 10.1.2.3"],
    )
    .body;
    for line in [
        "x-forwarded-for: 10.1.2.3,127.0.0.1",
        &format!("x-forwarded-port: {}", chp.port),
        "x-forwarded-proto: http",
        &format!("x-forwarded-host: 127.0.0.1:{}", chp.port),
        "x-hub-edge: deskgate",
    ] {
        assert!(headers.contains(line), "missing `{line}` in:\n{headers}");
    }
    // The target's own path is put in front (prepend_path).
    let bytes = format!(r#"{{"target": "https://{alice}/bytes"}}"#);
    assert_eq!(
        admin(chp.api, "POST", "/api/routes/b", Some(&bytes), None).status,
        201
    );
    assert_eq!(curl(&chp.url("/b/5"), &[]).body, "xxxxx");

    // Without --insecure the self-signed certificate is refused: 503, as CHP answers.
    let strict = Chp::start(fx.path(), &["--no-include-prefix", "-c", config], None);
    assert_eq!(
        admin(
            strict.api,
            "POST",
            "/api/routes/user/alice",
            Some(&route),
            None
        )
        .status,
        201
    );
    assert_eq!(curl(&strict.url("/user/alice/whoami"), &[]).status, 503);
}

#[test]
fn bad_flags_are_named_and_symlink_name_selects_chp() {
    let out = Command::new(BIN)
        .args(["chp", "--frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--frobnicate"), "{err}");

    let out = Command::new(BIN)
        .args(["chp", "--client-ssl-key", "k.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--client-ssl-key"));

    let dir = tempfile::tempdir().unwrap();
    let link = chp_on_path(dir.path());
    let out = Command::new(link.join("configurable-http-proxy"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("configurable-http-proxy "));
}

/// A folder holding `configurable-http-proxy` -> deskgate, for PATH.
fn chp_on_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("configurable-http-proxy")).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// JupyterHub's own proxy tests, from its wheel, with `configurable-http-proxy` being
/// deskgate. They start the proxy themselves (and restart it, and move its API).
#[test]
fn jupyterhub_own_proxy_test_suites_pass() {
    let summary = run_jupyterhub_suites(
        &[],
        &[
            "jupyterhub.tests.test_proxy",
            "jupyterhub.tests.test_unix_socket",
        ],
    );
    eprintln!("JupyterHub suites: {summary}");
}

/// JupyterHub's `internal_ssl`: the hub starts the proxy with `--api-ssl-*` and
/// `--client-ssl-*` (mutual TLS on the routes API, client certificates toward single-user
/// servers); its own internal_ssl tests, and `test_proxy` again with `SSL_ENABLED=1`.
#[test]
fn jupyterhub_internal_ssl_suites_pass() {
    let summary = run_jupyterhub_suites(
        &[("SSL_ENABLED", "1")],
        &[
            "jupyterhub.tests.test_internal_ssl_connections",
            "jupyterhub.tests.test_proxy",
        ],
    );
    eprintln!("JupyterHub internal_ssl suites: {summary}");
}

/// Runs JupyterHub's own pytest modules with deskgate as `configurable-http-proxy` on PATH;
/// returns pytest's summary line.
fn run_jupyterhub_suites(env: &[(&str, &str)], modules: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bin = chp_on_path(dir.path());
    let ini = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub/pytest.ini");
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pytest",
        "-c",
        ini,
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
    ])
    .arg("--rootdir")
    .arg(dir.path())
    .arg("--pyargs")
    .args(modules);
    // test_proxy_bind_ip also connects to the address the host name resolves to; where that is
    // not loopback, it stays out (tests send traffic to 127.0.0.0/8 only).
    if !hostname_is_loopback() {
        cmd.args([
            "--deselect",
            "jupyterhub/tests/test_proxy.py::test_proxy_bind_ip",
        ]);
    }
    let out = cmd
        .current_dir(dir.path())
        .env("PATH", path_with(&bin))
        .envs(env.iter().copied())
        .output()
        .expect("python3 with jupyterhub, pytest, pytest-asyncio (./dev test installs them)");
    // test_external_proxy leaves its spawned single-user server running (JupyterHub's test, as
    // with CHP): stop what was started with this PATH.
    kill_processes_started_with(&bin);
    let text = String::from_utf8_lossy(&out.stdout);
    // The proxies pytest starts log to the same stdout; find pytest's own summary line.
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains(" passed") && l.contains(" in "))
        .unwrap_or("")
        .to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.contains(" passed") && !summary.contains("failed"),
        "{summary}"
    );
    // The only skips are the host-routing cases, which CHP skips too without subdomains.
    for line in text.lines().filter(|l| l.starts_with("SKIPPED")) {
        assert!(
            line.ends_with("requires subdomains"),
            "unexpected skip: {line}"
        );
    }
    summary
}

/// Kills processes whose environment names `marker` (a test's own temporary folder).
fn kill_processes_started_with(marker: &Path) {
    let marker = marker.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if String::from_utf8_lossy(&env).contains(&marker) && pid != std::process::id() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn hostname_is_loopback() -> bool {
    let out = Command::new("python3")
        .args([
            "-c",
            "import socket; print(socket.gethostbyname(socket.gethostname()))",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .starts_with("127.")
}

/// A real JupyterHub (dummy authenticator, a local `jupyterhub-singleuser`) with deskgate
/// as its proxy: log in, spawn, reach the server by HTTP and WebSocket, then kill the proxy
/// and see the hub restart it with its routes. The steps are in `tests/jupyterhub/real_hub.py`.
#[test]
fn real_jupyterhub_runs_behind_deskgate_chp() {
    let dir = tempfile::tempdir().unwrap();
    let bin = chp_on_path(dir.path());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub/real_hub.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .args(["--hub-port", &free_port().to_string()])
        .args(["--proxy-port", &free_port().to_string()])
        .args(["--api-port", &free_port().to_string()])
        .env("PATH", path_with(&bin))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("routes restored"), "{text}");
}

//! The command line: `-t` config checks with FILE:LINE:COL, `--version`, and `deskgate demo`.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::process::Command;
use tokio_tungstenite::tungstenite::Message;

fn check(dir: &std::path::Path, name: &str, yaml: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&format!("{}/", dir.display()), ""),
    )
}

const HEAD: &str = "listeners:\n  - addr: \"127.0.0.1:8080\"\nupstreams:\n  hub:\n    servers: [\"127.0.0.1:5020\"]\n";

#[test]
fn broken_configs_name_file_line_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown-key.yaml", format!("{HEAD}routes:\n  - path: /\n    upstraem: hub\n"), "unknown-key.yaml:8:5: ", "unknown field `upstraem`"),
        ("wrong-type.yaml", format!("{HEAD}routes:\n  - path: /\n    upstream: hub\n    strip_prefix: maybe\n"), "wrong-type.yaml:9:19: ", "expected a boolean"),
        ("no-upstream.yaml", format!("{HEAD}routes:\n  - path: /\n    upstream: hbu\n"), "no-upstream.yaml:8:15: ", "upstream `hbu`, which is not defined"),
        ("duplicate.yaml", format!("{HEAD}routes:\n  - path: /x/\n    upstream: hub\n  - path: /x/\n    upstream: hub\n"), "duplicate.yaml:9:5: ", "duplicate route `/x/`"),
        (
            "bad-cert.yaml",
            "listeners:\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      certs:\n        - { cert: /nonexistent/hub.pem, key: /nonexistent/hub.key }\n".to_string(),
            "bad-cert.yaml:5:19: ",
            "cannot read certificate /nonexistent/hub.pem",
        ),
    ];
    for (name, yaml, position, message) in cases {
        let (code, out) = check(dir.path(), name, &yaml);
        assert_eq!(code, 1, "{name}: {out}");
        let first = out.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(position),
            "{name}: expected {position}..., got {out}"
        );
        assert!(
            first.contains(message),
            "{name}: expected `{message}`, got {out}"
        );
    }
}

#[test]
fn shipped_config_passes_check() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/deskgate.yaml");
    let out = Command::new(BIN)
        .args(["-t", "--skip-files", "-c", conf])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), format!("{conf}: ok"));

    // Without --skip-files, the same file with its certificate and secret paths pointed at
    // generated files passes too.
    let fx = Fixture::new();
    let tsig = fx.path().join("acme-tsig.key");
    std::fs::write(
        &tsig,
        "key \"deskgate-acme\" { algorithm hmac-sha256; secret \"c2VjcmV0\"; };\n",
    )
    .unwrap();
    let yaml = std::fs::read_to_string(conf)
        .unwrap()
        .replace("/etc/deskgate/hub.pem", fx.edge_cert.to_str().unwrap())
        .replace("/etc/deskgate/hub.key", fx.edge_key.to_str().unwrap())
        .replace("/etc/deskgate/wild.pem", fx.wild_cert.to_str().unwrap())
        .replace("/etc/deskgate/wild.key", fx.wild_key.to_str().unwrap())
        .replace("/run/secrets/vnc", fx.password_file.to_str().unwrap())
        .replace(
            "/run/secrets/hub-api-key",
            fx.password_file.to_str().unwrap(),
        )
        .replace(
            "/etc/deskgate/admin-token",
            fx.password_file.to_str().unwrap(),
        )
        .replace("/etc/deskgate/acme-tsig.key", tsig.to_str().unwrap());
    let (code, out) = check(fx.path(), "deskgate.yaml", &yaml);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("deskgate "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo"));
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_serves_its_page_and_echoes_a_websocket_frame() {
    let (http_port, https_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{http_port}"),
            "--tls-listen",
            &format!("127.0.0.1:{https_port}"),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
            // The echo page, as on a machine without Debian's novnc (tests/admin_page.rs
            // covers the noVNC desktop).
            "--novnc",
            "none",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let demo = Deskgate::from_child(child, https_port, log.clone());
    let banner = std::fs::read_to_string(&log).unwrap();
    assert!(
        banner.contains(&format!("https://127.0.0.1:{https_port}/desktop/demo/")),
        "{banner}"
    );
    assert!(banner.contains("try:  curl -k"), "{banner}");

    let r = curl(
        &format!("https://localhost:{https_port}/desktop/demo/"),
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<h1>desktop demo</h1>"), "{}", r.body);

    let (mut ws, _) = ws_connect(&format!(
        "wss://localhost:{https_port}/desktop/demo/websockify"
    ))
    .await
    .unwrap();
    ws.send(Message::text("hello desktop")).await.unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_text().unwrap().as_str(), "hello desktop");
    drop(demo);
}

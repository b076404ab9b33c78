//! The deploy kit: the systemd unit verifies, the compose config checks, the Dockerfile builds
//! where a Docker engine runs (skipped with the reason printed where it does not).

mod common;
use common::*;
use std::process::Command;

fn available(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn systemd_unit_verifies() {
    if !available("systemd-analyze", &["--version"]) {
        println!("skipped: systemd-analyze is not installed on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/deskgate.service"
    ))
    .unwrap();
    // Point ExecStart at the binary under test (the unit names /usr/local/bin/deskgate).
    let path = dir.path().join("deskgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/deskgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("deskgate.service:"),
        "systemd-analyze verify: {text}"
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
}

#[test]
fn compose_configs_pass_check() {
    for name in ["deskgate.compose.yaml", "deskgate.edges.yaml"] {
        let conf = format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(BIN)
            .args(["-t", "--skip-files", "-c", &conf])
            .env("CONFIGPROXY_AUTH_TOKEN", "t")
            .env("HUB_API_KEY", "k")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dockerfile_builds_where_docker_runs() {
    if !available("docker", &["info"]) {
        println!("skipped: no Docker engine runs here (`docker info` fails); the Dockerfile is built where one does");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("docker")
        .args([
            "build",
            "-q",
            "-f",
            "deploy/Dockerfile",
            "-t",
            "deskgate:test",
            ".",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

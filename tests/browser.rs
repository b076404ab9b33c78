//! A real desktop in a real browser through deskgate: Xvnc painted a known colour, websockify
//! as the KasmVNC-like container (TLS only, self-signed, Basic auth, serving noVNC), and
//! headless Chromium running noVNC through deskgate, by path and by host. The hub's original
//! failure (a relay dropping `Sec-WebSocket-Protocol`) is kept as a route that must fail.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const VNC_PASSWORD: &str = "vncpw123";
/// Dodger blue, painted on the root window with xsetroot.
const ROOT_COLOUR: (&str, [u8; 3]) = ("#1e90ff", [0x1e, 0x90, 0xff]);

fn free_display() -> u32 {
    (40..200)
        .find(|n| {
            !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
                && !Path::new(&format!("/tmp/.X{n}-lock")).exists()
        })
        .expect("a free X display")
}

/// Xvnc on a free display with a VNC password, its root window painted ROOT_COLOUR.
fn start_xvnc(dir: &Path) -> (Killed, u16) {
    let passwd = dir.join("vncpasswd");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s\\n' '{VNC_PASSWORD}' | vncpasswd -f > '{}'",
            passwd.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vncpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let display = free_display();
    let rfb_port = free_port();
    let log = std::fs::File::create(dir.join("xvnc.log")).unwrap();
    let xvnc = Command::new("Xvnc")
        .arg(format!(":{display}"))
        .args([
            "-rfbport",
            &rfb_port.to_string(),
            "-localhost",
            "-SecurityTypes",
            "VncAuth",
            "-PasswordFile",
        ])
        .arg(&passwd)
        .args(["-geometry", "640x480", "-depth", "24", "-nolisten", "tcp"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let xvnc = Killed(xvnc);
    wait_port(rfb_port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ok = Command::new("xsetroot")
            .args(["-solid", ROOT_COLOUR.0])
            .env("DISPLAY", format!(":{display}"))
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "xsetroot never reached :{display}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (xvnc, rfb_port)
}

/// websockify as the container: TLS only, self-signed, Basic auth, serving noVNC.
fn start_websockify(fx: &Fixture, rfb_port: u16) -> (Killed, u16) {
    let port = free_port();
    let log = std::fs::File::create(fx.path().join("websockify.log")).unwrap();
    let child = Command::new("websockify")
        .arg("--cert")
        .arg(&fx.desk_cert)
        .arg("--key")
        .arg(&fx.desk_key)
        .args([
            "--ssl-only",
            "--web",
            "/usr/share/novnc",
            "--auth-plugin",
            "BasicHTTPAuth",
            "--auth-source",
        ])
        .arg(format!("{DESKTOP_USER}:{DESKTOP_PASSWORD}"))
        .arg(format!("127.0.0.1:{port}"))
        .arg(format!("127.0.0.1:{rfb_port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_port(port);
    (child, port)
}

struct BrowserResult {
    state: String,
    pixel: Option<Vec<u8>>,
    raw: String,
}

fn open_novnc(url: &str, screenshot: &Path) -> BrowserResult {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/novnc.mjs");
    let rgb = ROOT_COLOUR
        .1
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("node")
        .arg(script)
        .arg(url)
        .arg(screenshot)
        .arg("MAP hub.test 127.0.0.1, MAP *.hub.test 127.0.0.1")
        .arg(rgb)
        .arg("30000")
        .stderr(Stdio::inherit())
        .output()
        .expect("node");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value =
        serde_json::from_str(raw.lines().last().unwrap_or("{}")).unwrap_or_default();
    BrowserResult {
        state: v["state"].as_str().unwrap_or("no result").to_string(),
        pixel: v["pixel"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect()),
        raw,
    }
}

fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn novnc_in_chromium_shows_the_desktop_through_deskgate() {
    for tool in [
        "Xvnc",
        "vncpasswd",
        "xsetroot",
        "websockify",
        "chromium",
        "node",
    ] {
        require(tool);
    }
    assert!(
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/node_modules/playwright-core"
        ))
        .exists(),
        "run `./dev test` (npm ci in tests/e2e)"
    );
    let fx = Fixture::new();
    let (_xvnc, rfb_port) = start_xvnc(fx.path());
    let (_websockify, ws_port) = start_websockify(&fx, rfb_port);
    let https_port = free_port();
    let yaml = format!(
        r#"listeners:
{tls}upstreams:
  desktop-alice:
    servers: ["127.0.0.1:{ws_port}"]
    tls: {{ verify: false }}
    basic_auth: {{ user: {DESKTOP_USER}, password_file: "{pw}" }}
routes:
  - host: "desktop-{{name}}.hub.test"
    upstream: "desktop-{{name}}"
  - path: "/desktop/{{name}}/"
    strip_prefix: true
    novnc: true
    upstream: "desktop-{{name}}"
  # The Flask relay's bug, kept as a regression check: without the subprotocol the
  # browser's WebSocket handshake must fail.
  - path: "/broken/{{name}}/"
    strip_prefix: true
    novnc: true
    drop_websocket_protocol: true
    upstream: "desktop-{{name}}"
"#,
        tls = fx.tls_listener(https_port),
        pw = fx.password_file.display(),
    );
    let _edge = Deskgate::start(fx.path(), "edge", &yaml, https_port);
    let out = output_dir();
    let query = format!("autoconnect=true&password={VNC_PASSWORD}&resize=off");

    // Path shape: deskgate's novnc redirect adds path=desktop/alice/websockify.
    let shot = out.join("novnc-by-path.png");
    let r = open_novnc(
        &format!("https://hub.test:{https_port}/desktop/alice/vnc.html?{query}"),
        &shot,
    );
    assert_eq!(r.state, "connected", "by path: {}", r.raw);
    assert_eq!(
        r.pixel.as_deref(),
        Some(&ROOT_COLOUR.1[..]),
        "by path, canvas colour: {}",
        r.raw
    );
    assert!(r.raw.contains("/desktop/alice/websockify"), "{}", r.raw);

    // Host shape: the bare /websockify is routed by host.
    let shot = out.join("novnc-by-host.png");
    let r = open_novnc(
        &format!("https://desktop-alice.hub.test:{https_port}/vnc.html?{query}"),
        &shot,
    );
    assert_eq!(r.state, "connected", "by host: {}", r.raw);
    assert_eq!(
        r.pixel.as_deref(),
        Some(&ROOT_COLOUR.1[..]),
        "by host, canvas colour: {}",
        r.raw
    );

    // The hub's failure: the same page through a relay that drops Sec-WebSocket-Protocol.
    let shot = out.join("novnc-broken-relay.png");
    let r = open_novnc(
        &format!("https://hub.test:{https_port}/broken/alice/vnc.html?{query}"),
        &shot,
    );
    assert_eq!(
        r.state, "failed",
        "dropping the subprotocol must break noVNC: {}",
        r.raw
    );
    println!("screenshots in {}", out.display());
}

//! The admin page (`/ui/` on the admin listener) and the demo's live desktop: the page's API
//! guards (token, cookie, CSRF) and "disconnect" with real WebSockets, then headless Chromium
//! running noVNC on the demo desktop and the admin page through a real `deskgate demo`.

mod common;
use common::*;
use futures_util::StreamExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Logs in to the admin page with curl; returns (status, cookie, csrf).
fn login(admin_port: u16, token: &str) -> (u16, Option<String>, Option<String>) {
    let r = curl(
        &format!("http://127.0.0.1:{admin_port}/ui/login"),
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &serde_json::json!({ "token": token }).to_string(),
        ],
    );
    let cookie = r.header("set-cookie");
    let csrf = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["csrf"].as_str().map(str::to_string));
    (r.status, cookie, csrf)
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_page_needs_the_token_and_csrf_and_disconnects_one_session_only() {
    let fx = Fixture::new();
    let (_edge, https_port, admin_port) = alice_with_admin(&fx);
    let page = curl(&format!("http://127.0.0.1:{admin_port}/ui/"), &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<script src=\"app.js\">"));

    let url = format!("wss://hub.test:{https_port}/desktop/alice/websockify");
    let (mut first, _) = ws_connect(&url).await.unwrap();
    let (mut second, _) = ws_connect(&url).await.unwrap();
    for ws in [&mut first, &mut second] {
        assert_eq!(ask(ws, "hello").await, "hello");
    }

    // No data without logging in, nor with a wrong token.
    let state_url = format!("http://127.0.0.1:{admin_port}/ui/api/state");
    assert_eq!(curl(&state_url, &[]).status, 401);
    let (status, cookie, _) = login(admin_port, "wrong-token");
    assert_eq!((status, cookie), (403, None));
    assert_eq!(
        curl(&state_url, &["-H", "Cookie: deskgate_ui=made-up"]).status,
        401
    );

    let (status, cookie, csrf) = login(admin_port, ADMIN_TOKEN);
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    let state: serde_json::Value =
        serde_json::from_str(&curl(&state_url, &["-H", &format!("Cookie: {pair}")]).body).unwrap();
    let sessions = state["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{state}");
    assert!(sessions
        .iter()
        .all(|s| s["upstream"] == "desktop-alice" && s["bytes_down"].as_u64().unwrap() >= 5));
    let id = sessions[0]["id"].as_u64().unwrap();

    // The action needs the CSRF token as a header, not only the cookie.
    let action = format!("http://127.0.0.1:{admin_port}/ui/api/sessions/{id}/disconnect");
    let cookie_h = format!("Cookie: {pair}");
    assert_eq!(curl(&action, &["-X", "POST", "-H", &cookie_h]).status, 403);
    let csrf_h = format!("X-CSRF-Token: {}", csrf.unwrap());
    assert_eq!(
        curl(&action, &["-X", "POST", "-H", &cookie_h, "-H", &csrf_h]).status,
        200
    );

    // One of the two ends; the other carries on.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let (a, b) = (first.next(), second.next());
        tokio::select! {
            m = a => ("first", m.map(|r| r.is_err())),
            m = b => ("second", m.map(|r| r.is_err())),
        }
    })
    .await
    .expect("a disconnected WebSocket ends");
    assert!(
        matches!(ended.1, None | Some(true)),
        "ended with a message: {ended:?}"
    );
    let survivor = if ended.0 == "first" {
        &mut second
    } else {
        &mut first
    };
    assert_eq!(ask(survivor, "still here").await, "still here");
    assert_eq!(
        curl(&action, &["-X", "POST", "-H", &cookie_h, "-H", &csrf_h]).status,
        404
    );
}

#[test]
fn demo_desktop_in_novnc_and_the_admin_page_in_chromium() {
    assert!(
        Path::new("/usr/share/novnc/vnc.html").exists()
            && Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/e2e/node_modules/playwright-core"
            ))
            .exists(),
        "run the tests with `./dev test`, which installs novnc, chromium and playwright-core"
    );
    let (http_port, https_port, admin_port) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let child = Command::new(BIN)
        .args(["demo", "--listen", &format!("127.0.0.1:{http_port}")])
        .args(["--tls-listen", &format!("127.0.0.1:{https_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let _demo = Deskgate::from_child(child, https_port, log.clone());
    wait_port(admin_port);
    let banner = std::fs::read_to_string(&log).unwrap();
    let desktop_url = banner
        .split_whitespace()
        .find(|w| w.contains("/desktop/demo/vnc.html"))
        .expect("the banner names the desktop URL")
        .to_string();
    let token = banner
        .split("token: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .expect("the banner gives the admin token")
        .to_string();
    let admin_url = format!("http://127.0.0.1:{admin_port}/ui/");
    assert!(banner.contains(&admin_url), "{banner}");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-page");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/admin.mjs"))
        .args([&desktop_url, &admin_url, &token])
        .arg(&shots)
        .arg("60000")
        .stderr(Stdio::inherit())
        .output()
        .expect("node");
    let raw = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value = serde_json::from_str(raw.lines().last().unwrap_or("{}")).unwrap();
    for step in [
        "connected",
        "pictureChanged",
        "wrongTokenRejected",
        "sessionListed",
        "bytesGrew",
        "qualityShown",
        "loopbackNoted",
        "capShown",
        "disconnected",
    ] {
        assert_eq!(seen[step], true, "{step} failed: {seen:#}");
    }
    assert_eq!(seen["stateWithoutLogin"], 401, "{seen:#}");
    // docs/ holds copies of these screenshots (novnc-demo-desktop.png, admin-page.png).
    for shot in ["novnc-demo-desktop.png", "admin-page.png"] {
        assert!(shots.join(shot).exists(), "{shot} was not taken");
    }
}

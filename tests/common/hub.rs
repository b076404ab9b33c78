//! A small stand-in for the hub web app, on a loopback port: the endpoints deskgate calls
//! (container lookup, access check), counting calls so tests can check caching.
//!
//! - `GET /api/apache/container-target/<name>` (needs `X-API-Key`): `{"target": ...}` for
//!   names in `targets`, `NULL` for `nulluser`, `{}` for `emptyuser`, 404 otherwise;
//!   `slow-*` names answer after 30 s.
//! - `GET /api/auth/desktop/<name>`: cookie `hub_session=<user>`; 200 + `X-User` when
//!   user == name or user == `admin`, 403 for another user, 401 without a session.
//! - `GET /hub/error/<code>?url=...` (JupyterHub's error pages): `error page for <path>`.
//! - anything else: 200 `hub`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const API_KEY: &str = "hub-api-key-123";

#[derive(Default)]
pub struct HubState {
    pub targets: Mutex<HashMap<String, String>>,
    pub calls: Mutex<HashMap<String, usize>>,
}

impl HubState {
    pub fn calls(&self, path: &str) -> usize {
        self.calls.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

pub fn spawn_hub() -> (SocketAddr, Arc<HubState>) {
    let state = Arc::new(HubState::default());
    let st = state.clone();
    let addr = super::serve_on_thread(move |mut tcp| {
        let st = st.clone();
        async move {
            let mut buf = Vec::new();
            loop {
                let end = loop {
                    if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break e;
                    }
                    let mut chunk = [0u8; 4096];
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                let (status, extra, body) = answer(&st, &head).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                    body.len()
                );
                if tcp.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    });
    (addr, state)
}

async fn answer(st: &HubState, head: &str) -> (&'static str, String, String) {
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    *st.calls.lock().unwrap().entry(path.clone()).or_default() += 1;
    if let Some(name) = path.strip_prefix("/api/apache/container-target/") {
        if header("x-api-key").as_deref() != Some(API_KEY) {
            return ("401 Unauthorized", String::new(), "bad key".into());
        }
        if name.starts_with("slow-") {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
        return match (name, st.targets.lock().unwrap().get(name).cloned()) {
            (_, Some(t)) => (
                "200 OK",
                "Content-Type: application/json\r\n".into(),
                format!("{{\"target\": \"{t}\"}}"),
            ),
            ("nulluser", _) => ("200 OK", String::new(), "NULL".into()),
            ("emptyuser", _) => (
                "200 OK",
                "Content-Type: application/json\r\n".into(),
                "{}".into(),
            ),
            _ => ("404 Not Found", String::new(), "no such container".into()),
        };
    }
    if let Some(name) = path.strip_prefix("/api/auth/desktop/") {
        let user = header("cookie").and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("hub_session=").map(str::to_string))
        });
        return match user {
            None => ("401 Unauthorized", String::new(), "login first".into()),
            Some(u) if u == name || u == "admin" => {
                ("200 OK", format!("X-User: {u}\r\n"), "ok".into())
            }
            Some(_) => ("403 Forbidden", String::new(), "not yours".into()),
        };
    }
    if path.starts_with("/hub/error/") {
        return (
            "200 OK",
            "Content-Type: text/html\r\n".into(),
            format!("error page for {path}"),
        );
    }
    ("200 OK", String::new(), "hub".into())
}

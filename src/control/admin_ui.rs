//! The admin page, `/ui/` on the admin listener: routes and open desktop sessions, live, with
//! a "disconnect" action. Its files are embedded in the binary (no CDN).
//!
//! Access: the admin token, entered once in a login form, becomes a session cookie
//! (`HttpOnly; Secure; SameSite=Strict`, path `/ui/`). Actions also need the session's CSRF
//! token in an `X-CSRF-Token` header, which only the page's own script can read (from
//! `/ui/api/state`). Without a configured token (`admin: { open: true }`) the page is open,
//! like the API.

use crate::edge::gateway::Gateway;
use crate::hub::runtime_routes::RuntimeRoutes;
use crate::routing::UpstreamRef;
use crate::support::secret::{constant_time_eq, random_hex, Secret};
use crate::telemetry::quality::{LegFigures, QualitySample, Verdict};
use crate::telemetry::sessions::SESSIONS;
use http::{HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");
const COOKIE: &str = "deskgate_ui";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Logged-in browsers kept at once (older ones are dropped first).
const MAX_LOGINS: usize = 1000;

struct Login {
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct AdminUi {
    logins: Mutex<HashMap<String, Login>>,
}

/// What a UI request needs from the admin listener.
pub struct UiContext<'a> {
    pub token: Option<&'a Secret>,
    pub gateway: &'a Gateway,
    pub routes: &'a RuntimeRoutes,
}

/// A request to `/ui/...`, reduced to what the page uses.
pub struct UiRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub cookie: Option<&'a str>,
    pub csrf: Option<&'a str>,
    pub body: &'a [u8],
}

/// The page's responses also forbid framing, sniffing and anything not from this listener.
fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = crate::support::reply::reply(status, content_type, body);
    let h = r.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

impl AdminUi {
    pub fn handle(&self, ctx: &UiContext<'_>, req: &UiRequest<'_>) -> Response<Vec<u8>> {
        match (req.method, req.path) {
            ("GET", "/ui") | ("GET", "/ui/") | ("GET", "/ui/index.html") => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                INDEX_HTML.as_bytes().to_vec(),
            ),
            ("GET", "/ui/app.js") => reply(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                APP_JS.as_bytes().to_vec(),
            ),
            ("GET", "/ui/style.css") => reply(
                StatusCode::OK,
                "text/css; charset=utf-8",
                STYLE_CSS.as_bytes().to_vec(),
            ),
            ("POST", "/ui/login") => self.login(ctx, req),
            ("POST", "/ui/logout") => {
                if let Some(id) = req.cookie {
                    self.logins.lock().expect("logins lock").remove(id);
                }
                let mut r = json_reply(StatusCode::OK, &json!({}));
                r.headers_mut().insert(
                    http::header::SET_COOKIE,
                    http::HeaderValue::from_str(&format!(
                        "{COOKIE}=; Path=/ui/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
                    ))
                    .expect("valid cookie"),
                );
                r
            }
            ("GET", "/ui/api/state") => match self.csrf_for(ctx, req.cookie) {
                Some(csrf) => json_reply(StatusCode::OK, &state(ctx, &csrf)),
                None => json_reply(StatusCode::UNAUTHORIZED, &json!({"error": "log in"})),
            },
            ("POST", path) if path.starts_with("/ui/api/sessions/") => {
                let Some(csrf) = self.csrf_for(ctx, req.cookie) else {
                    return json_reply(StatusCode::UNAUTHORIZED, &json!({"error": "log in"}));
                };
                if !req
                    .csrf
                    .is_some_and(|c| constant_time_eq(c.as_bytes(), csrf.as_bytes()))
                {
                    return json_reply(
                        StatusCode::FORBIDDEN,
                        &json!({"error": "missing or wrong X-CSRF-Token"}),
                    );
                }
                let id = path
                    .trim_start_matches("/ui/api/sessions/")
                    .strip_suffix("/disconnect")
                    .and_then(|id| id.parse::<u64>().ok());
                match id {
                    Some(id) if SESSIONS.disconnect(id) => {
                        log::info!("admin page: session {id} disconnected");
                        json_reply(StatusCode::OK, &json!({"disconnected": id}))
                    }
                    Some(id) => json_reply(
                        StatusCode::NOT_FOUND,
                        &json!({"error": format!("no open session {id}")}),
                    ),
                    None => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
                }
            }
            (_, p) if p.starts_with("/ui/") || p == "/ui" => {
                json_reply(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
            }
            _ => json_reply(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }

    /// The logged-in browser's CSRF token; with an open admin API, one for everybody.
    fn csrf_for(&self, ctx: &UiContext<'_>, cookie: Option<&str>) -> Option<String> {
        if ctx.token.is_none() {
            return Some("open".into());
        }
        let id = cookie?;
        let mut logins = self.logins.lock().expect("logins lock");
        let now = Instant::now();
        logins.retain(|_, l| l.expires > now);
        logins.get(id).map(|l| l.csrf.clone())
    }

    fn login(&self, ctx: &UiContext<'_>, req: &UiRequest<'_>) -> Response<Vec<u8>> {
        let given = serde_json::from_slice::<Value>(req.body)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .unwrap_or_default();
        let ok = match ctx.token {
            Some(t) => constant_time_eq(given.as_bytes(), t.expose().as_bytes()),
            None => true,
        };
        if !ok {
            log::warn!("admin page: login with a wrong token");
            return json_reply(StatusCode::FORBIDDEN, &json!({"error": "wrong token"}));
        }
        let id = random_hex(32);
        let csrf = random_hex(32);
        {
            let mut logins = self.logins.lock().expect("logins lock");
            if logins.len() >= MAX_LOGINS {
                let oldest = logins
                    .iter()
                    .min_by_key(|(_, l)| l.expires)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    logins.remove(&k);
                }
            }
            logins.insert(
                id.clone(),
                Login {
                    csrf: csrf.clone(),
                    expires: Instant::now() + SESSION_LIFETIME,
                },
            );
        }
        let mut r = json_reply(StatusCode::OK, &json!({"csrf": csrf}));
        r.headers_mut().insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_str(&format!(
                "{COOKIE}={id}; Path=/ui/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
                SESSION_LIFETIME.as_secs()
            ))
            .expect("valid cookie"),
        );
        r
    }
}

/// The browser's session cookie for the page, from a `Cookie` header.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

fn state(ctx: &UiContext<'_>, csrf: &str) -> Value {
    let snapshot = ctx.gateway.snapshot();
    let mut routes: Vec<Value> = snapshot
        .configured_routes()
        .iter()
        .map(|r| {
            let (upstream, health) = match &r.upstream {
                UpstreamRef::Fixed(u) => (
                    format!("{} ({})", u.name, u.describe()),
                    u.pool.as_ref().map(|p| {
                        let (up, all) = p.health();
                        format!("{up}/{all} healthy")
                    }),
                ),
                UpstreamRef::Template(t) => (format!("{t} (by name)"), None),
                UpstreamRef::Resolver(_) => ("asked of the hub".to_string(), None),
            };
            json!({"route": r.label, "kind": "config", "upstream": upstream, "health": health,
                   "last_activity": null})
        })
        .collect();
    for (prefix, data) in ctx.routes.list(None) {
        routes.push(json!({
            "route": prefix, "kind": "runtime",
            "upstream": data.get("target").cloned().unwrap_or(Value::Null),
            "health": null,
            "last_activity": data.get("last_activity").cloned().unwrap_or(Value::Null),
        }));
    }
    let sessions = sessions_json();
    let history: Vec<Value> = SESSIONS
        .history()
        .iter()
        .map(|h| json!({"t": h.at_ms, "open": h.open, "bytes": h.bytes_total}))
        .collect();
    json!({
        "csrf": csrf,
        "now": crate::telemetry::activity::now_ms(),
        "routes": routes,
        "sessions": sessions,
        "history": history,
    })
}

/// Open sessions with their network figures: the page's table and `GET /api/sessions`.
pub fn sessions_json() -> Vec<Value> {
    SESSIONS
        .list()
        .iter()
        .map(|s| {
            let (latest, history) = {
                let q = s.quality.lock().expect("quality lock");
                (
                    q.latest,
                    q.history.iter().map(history_point).collect::<Vec<_>>(),
                )
            };
            let max_rate = s.max_rate.load(Ordering::Relaxed);
            json!({
                "id": s.id, "route": s.route, "upstream": s.upstream, "user": s.user,
                "client": s.client, "since": s.since_ms,
                "bytes_up": s.bytes_up.load(Ordering::Relaxed),
                "bytes_down": s.bytes_down.load(Ordering::Relaxed),
                "last_activity": s.last_ms.load(Ordering::Relaxed),
                "max_rate": (max_rate > 0).then_some(max_rate),
                "quality": latest.as_ref().map(quality_json),
                "quality_history": history,
            })
        })
        .collect()
}

fn ms(us: u32) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn leg_json(l: &LegFigures) -> Value {
    json!({
        "rtt_ms": ms(l.rtt_us), "rttvar_ms": ms(l.rttvar_us),
        "loss_pct": l.loss_permille as f64 / 10.0, "segments": l.segments,
        "delivery_rate": l.delivery_rate, "unacked_bytes": l.unacked_bytes,
    })
}

fn quality_json(q: &QualitySample) -> Value {
    json!({
        "at": q.at_ms,
        "verdict": q.verdict.code(), "verdict_text": q.verdict.text(),
        "why": Verdict::reasons(&q.browser, q.desktop.as_ref(), q.backlog_bytes),
        "browser": leg_json(&q.browser),
        "desktop": q.desktop.as_ref().map(leg_json),
        "backlog_bytes": q.backlog_bytes, "rate_down": q.rate_down,
    })
}

fn history_point(q: &QualitySample) -> Value {
    json!({
        "t": q.at_ms, "browser_rtt_ms": ms(q.browser.rtt_us),
        "desktop_rtt_ms": q.desktop.map(|d| ms(d.rtt_us)),
        "backlog": q.backlog_bytes, "rate_down": q.rate_down, "verdict": q.verdict.code(),
    })
}

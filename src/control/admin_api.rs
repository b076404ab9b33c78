//! The admin listener: the runtime routes API (configurable-http-proxy compatible, so
//! JupyterHub's `ConfigurableHTTPProxy` can drive it), and health endpoints.
//!
//! - `GET /api/routes[?inactive_since=ISO8601]`, `GET|POST|DELETE /api/routes/<prefix>`:
//!   need `Authorization: token <t>` (403 otherwise; compared in constant time).
//! - `GET /healthz` (alive), `GET /readyz` (config loaded, listeners bound), `GET /metrics`.
//! - `/ui/`: the admin page (`control::admin_ui`).

use crate::hub::runtime_routes::{parse_iso8601, RouteError, RuntimeRoutes};
use crate::support::reply::{json, reply};
use crate::support::secret::{constant_time_eq, Secret};
use crate::telemetry::metrics;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Route bodies are small JSON objects; refuse anything larger.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApi {
    pub token: Option<Secret>,
    pub routes: Arc<RuntimeRoutes>,
    pub gateway: Arc<crate::edge::gateway::Gateway>,
    /// The shared route store (Redis), when several edges share runtime routes.
    pub store: Option<Arc<crate::hub::route_store::RouteStore>>,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// Serve only `/metrics` (a separate metrics listener).
    pub metrics_only: bool,
    /// The admin page at `/ui/`.
    pub ui: crate::control::admin_ui::AdminUi,
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json(
        status,
        &serde_json::json!({ "status": status.as_u16(), "message": message }),
    )
}

impl AdminApi {
    fn authorized(&self, session: &ServerSession) -> bool {
        // No token only with `admin: { open: true }` (configurable-http-proxy without
        // CONFIGPROXY_AUTH_TOKEN): the API is open.
        let Some(token) = &self.token else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("token ")
                    .or_else(|| v.strip_prefix("Bearer "))
            })
            .unwrap_or("");
        constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
    }

    async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "route body too large"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read body: {e}"),
                    ))
                }
            }
        }
    }

    /// Adds a route: through the shared store when there is one (checked first, so a bad
    /// body is a 400 and not a write), else locally.
    async fn add_route(&self, prefix: &str, data: Map<String, Value>) -> Result<(), RouteError> {
        let Some(store) = &self.store else {
            return self.routes.add(prefix, data).inspect_err(|e| {
                if let RouteError::Storage(m) = e {
                    log::error!("admin: {m}");
                }
            });
        };
        self.routes.check(prefix, data.clone())?;
        store
            .add(prefix, data)
            .await
            .map_err(|e| RouteError::Storage(format!("route store unavailable: {}", e.0)))
    }

    async fn remove_route(&self, prefix: &str) -> Result<bool, RouteError> {
        match &self.store {
            Some(store) => store
                .remove(prefix)
                .await
                .map_err(|e| RouteError::Storage(format!("route store unavailable: {}", e.0))),
            None => self.routes.remove(prefix),
        }
    }

    /// All routes, or (`?inactive_since=` / `?inactiveSince=`) those idle since a time.
    fn list_routes(&self, session: &ServerSession) -> Response<Vec<u8>> {
        let since = session
            .req_header()
            .uri
            .query()
            .and_then(|q| {
                q.split('&').find_map(|kv| {
                    kv.strip_prefix("inactive_since=")
                        .or_else(|| kv.strip_prefix("inactiveSince="))
                })
            })
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            });
        let since_ms = match since {
            Some(s) => match parse_iso8601(&s) {
                Some(ms) => Some(ms),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("inactive_since: `{s}` is not an ISO 8601 time"),
                    )
                }
            },
            None => None,
        };
        json(StatusCode::OK, &Value::Object(self.routes.list(since_ms)))
    }

    async fn admin_page(&self, session: &mut ServerSession, path: &str) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_string();
        let body = if method == "POST" {
            match Self::read_body(session).await {
                Ok(b) => b,
                Err(resp) => return resp,
            }
        } else {
            Vec::new()
        };
        let header = |name: &str| {
            session
                .req_header()
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
        };
        let req = crate::control::admin_ui::UiRequest {
            method: &method,
            path,
            cookie: header("cookie").and_then(crate::control::admin_ui::cookie_value),
            csrf: header("x-csrf-token"),
            body: &body,
        };
        let ctx = crate::control::admin_ui::UiContext {
            token: self.token.as_ref(),
            gateway: &self.gateway,
            routes: &self.routes,
        };
        self.ui.handle(&ctx, &req)
    }

    async fn routes_api(
        &self,
        session: &mut ServerSession,
        prefix: Option<String>,
    ) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        match (method.as_str(), prefix) {
            ("GET", None) => self.list_routes(session),
            ("GET", Some(p)) if p == "/" => self.list_routes(session),
            ("GET", Some(p)) => match self.routes.get(&p) {
                Some(v) => json(StatusCode::OK, &v),
                None => error(StatusCode::NOT_FOUND, &format!("no route {p}")),
            },
            ("POST", Some(p)) => {
                let body = match Self::read_body(session).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                let data: Map<String, Value> = match serde_json::from_slice(&body) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => {
                        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object")
                    }
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("the body is not JSON: {e}"),
                        )
                    }
                };
                match self.add_route(&p, data).await {
                    Ok(()) => {
                        metrics::ROUTE_CHANGES.inc();
                        reply(StatusCode::CREATED, "application/json", Vec::new())
                    }
                    Err(RouteError::BadRequest(m)) => error(StatusCode::BAD_REQUEST, &m),
                    Err(RouteError::Storage(m)) => error(StatusCode::SERVICE_UNAVAILABLE, &m),
                }
            }
            ("DELETE", Some(p)) => match self.remove_route(&p).await {
                Ok(true) => {
                    metrics::ROUTE_CHANGES.inc();
                    reply(StatusCode::NO_CONTENT, "application/json", Vec::new())
                }
                Ok(false) => error(StatusCode::NOT_FOUND, &format!("no route {p}")),
                Err(RouteError::Storage(m)) | Err(RouteError::BadRequest(m)) => {
                    error(StatusCode::SERVICE_UNAVAILABLE, &m)
                }
            },
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "use GET, POST or DELETE"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/healthz" => return reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                return if self.ready.load(std::sync::atomic::Ordering::Acquire) {
                    reply(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"starting\n".to_vec(),
                    )
                }
            }
            "/metrics" => {
                let gauges = metrics::Gauges {
                    runtime_routes: self.routes.len(),
                    generation: self.gateway.generation(),
                    route_store: self
                        .store
                        .as_ref()
                        .map(|s| s.up.load(std::sync::atomic::Ordering::Relaxed)),
                };
                return reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    metrics::render(&gauges).into_bytes(),
                );
            }
            _ => {}
        }
        if self.metrics_only {
            return error(StatusCode::NOT_FOUND, "only /metrics here");
        }
        if path == "/ui" || path.starts_with("/ui/") {
            return self.admin_page(session, &path).await;
        }
        if path == "/api/sessions" {
            if !self.authorized(session) {
                return error(
                    StatusCode::FORBIDDEN,
                    "missing or wrong `Authorization: token ...`",
                );
            }
            if session.req_header().method != http::Method::GET {
                return error(StatusCode::METHOD_NOT_ALLOWED, "use GET");
            }
            // The admin page's table with each session's network figures, for scripts.
            return json(
                StatusCode::OK,
                &serde_json::json!({ "sessions": crate::control::admin_ui::sessions_json() }),
            );
        }
        // As in configurable-http-proxy: `/api/routes/` names the route for `/` (POST,
        // DELETE); GET of it lists every route, like `/api/routes`.
        let prefix = match path.strip_prefix("/api/routes") {
            Some("") => None,
            Some(p) if p.starts_with('/') => Some(p.to_string()),
            _ => return error(StatusCode::NOT_FOUND, "not found"),
        };
        if !self.authorized(session) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong `Authorization: token ...`",
            );
        }
        self.routes_api(session, prefix).await
    }
}

//! The Pingora `ProxyHttp` implementation. Each phase is a short table of contents; the work
//! lives in the modules it calls.
//!
//! Request path: `request_filter` (refuse ambiguous requests -> redirect plain HTTP -> match
//! route -> noVNC redirect -> block -> access check -> choose upstream -> strip prefix) ->
//! `upstream_peer` (TLS, timeouts)
//! -> `upstream_request_filter` (forwarding headers) -> Pingora proxies; after an upgrade's `101`,
//! `upgraded_streams` hands both connections to `edge::tunnel`.

use crate::edge::forwarding::{rewrite_upstream_request, Forwarding};
use crate::edge::gateway::{Gateway, Snapshot};
use crate::edge::request_id;
use crate::edge::respond;
use crate::routing::{
    AccessDecision, AccessGate, Captures, RequestPath, Resolution, Route, RouteMatch, UpstreamRef,
};
use crate::telemetry::activity::now_ms;
use crate::telemetry::metrics;
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

/// Who an access check vouched for, copied to the upstream request (see `hub::access`).
const X_USER: http::HeaderName = http::HeaderName::from_static("x-user");

/// What a listener is for.
#[derive(Clone, Debug)]
pub struct ListenerRole {
    pub tls: bool,
    /// A plain-HTTP listener that only redirects to this HTTPS port.
    pub redirect_https_port: Option<u16>,
    /// A plain-HTTP listener that only redirects to this fixed origin (`redirect_to`).
    pub redirect_to: Option<Arc<str>>,
    /// The listener's port as `X-Forwarded-Port` (None on `unix:` sockets).
    pub port: Option<http::HeaderValue>,
    /// `Strict-Transport-Security` for every answer (TLS listeners with `tls.hsts` only).
    pub hsts: Option<http::HeaderValue>,
    /// The listener verifies client certificates (`tls.client_ca`).
    pub client_auth: bool,
}

pub struct EdgeProxy {
    pub gateway: Arc<Gateway>,
    pub role: ListenerRole,
    pub limits: Arc<crate::edge::limits::ConnectionLimits>,
}

#[derive(Default)]
pub struct RequestCtx {
    snapshot: Option<Arc<Snapshot>>,
    route: Option<Arc<Route>>,
    upstream: Option<Arc<Upstream>>,
    /// Servers of a multi-server upstream already tried for this request.
    tried: Vec<std::net::SocketAddr>,
    server: Option<String>,
    _in_flight: Option<crate::upstream::balance::InFlight>,
    original_host: String,
    /// The path prefix the route matched (`/app/`), kept only for routes that rewrite
    /// `Location` (`rewrite_location`).
    mount: Option<String>,
    upgrade: bool,
    connect_failures: u32,
    /// Set once the upstream answered 101: bytes now count as WebSocket traffic.
    upgraded: bool,
    /// The upgraded connection went to its own task (`edge::tunnel`), which accounts for it.
    handed_over: bool,
    /// The route's activity clock (runtime routes), touched by traffic that worked.
    activity: crate::telemetry::activity::Toucher,
    /// Bytes and frames of an upgraded connection.
    traffic: crate::edge::websocket::Traffic,
    started: Option<std::time::Instant>,
    /// This request's place under the listener's connection limits.
    _slot: Option<crate::edge::limits::Slot>,
    /// The request target as the client sent it (kept only when the access log is on).
    original_uri: Option<String>,
    upstream_started: Option<std::time::Instant>,
    /// The user an access check vouched for (sent upstream as `X-User`).
    user: Option<String>,
}

impl RequestCtx {
    fn route_label(&self) -> &str {
        self.route.as_ref().map_or("-", |r| r.label.as_str())
    }
}

/// The host as the client gave it, from `Host` or (HTTP/2) the URI authority.
fn raw_host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// `hub.test:8443` -> `hub.test`, `[::1]:8443` -> `[::1]`; malformed input is returned as is.
fn host_without_port(raw: &str) -> &str {
    if raw.starts_with('[') {
        raw.find(']').map_or(raw, |i| &raw[..=i])
    } else {
        raw.split(':').next().unwrap_or(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::host_without_port;
    #[test]
    fn hosts_without_ports() {
        assert_eq!(host_without_port("hub.test:8443"), "hub.test");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[abc"), "[abc");
        assert_eq!(host_without_port(""), "");
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        // Not Pingora's default compression module (deskgate never compresses: it would only
        // cost a context per request), only HSTS where configured.
        if let Some(value) = &self.role.hsts {
            modules.add_module(Box::new(crate::edge::hsts::HstsBuilder(value.clone())));
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // First: every answer from here on, deskgate's or the upstream's, carries it.
        request_id::assign(session.req_header_mut())?;
        if crate::edge::request_checks::refuse_ambiguous(session).await? {
            return Ok(true);
        }
        if self.role.client_auth {
            crate::tls::client_auth::pass_subject_upstream(session)?;
        }
        let req = session.req_header();
        let given_host = raw_host(req);
        let host = host_without_port(given_host).to_ascii_lowercase();
        ctx.original_host = given_host.to_string();
        if !self.role.tls {
            // HTTP-01 (ACME) is answered on plain listeners, before any redirect to HTTPS.
            if let Some(answer) = crate::tls::challenges::CHALLENGES.http_answer(req.uri.path()) {
                return Box::pin(respond::body(session, 200, "text/plain", answer.as_bytes()))
                    .await;
            }
        }
        if let Some(origin) = &self.role.redirect_to {
            let location = format!(
                "{origin}{}",
                req.uri.path_and_query().map_or("/", |p| p.as_str())
            );
            return Box::pin(respond::redirect(session, 308, &location)).await;
        }
        if let Some(port) = self.role.redirect_https_port {
            let location = respond::https_location(
                &host,
                port,
                req.uri.path_and_query().map_or("/", |p| p.as_str()),
            );
            return Box::pin(respond::redirect(session, 308, &location)).await;
        }
        if req.uri.path() == "/_chp_healthz" {
            // configurable-http-proxy's health endpoint, which load balancers in front of
            // JupyterHub poll.
            return Box::pin(respond::body(
                session,
                200,
                "application/json",
                br#"{"status":"OK"}"#,
            ))
            .await;
        }
        ctx.upgrade = session.is_upgrade_req();
        let snapshot = self.gateway.snapshot();
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.raw_path().len();
        if header_bytes > snapshot.max_header_bytes {
            return Box::pin(respond::error(session, 431)).await;
        }
        if ctx.upgrade && is_websocket_handshake(session) && !session.is_body_empty() {
            // A WebSocket handshake ends at its head, and its connections go to `edge::tunnel`
            // once the 101 is out (vendored pingora-proxy 02). With a body, Pingora would relay
            // the upgraded stream inside the request instead: the path deskgate no longer keeps.
            log::debug!("refused a WebSocket handshake with a body");
            return Box::pin(respond::error(session, 400)).await;
        }
        if !self.limits.is_unlimited() {
            let client = client_ip(session);
            match self.limits.acquire(client) {
                Some(slot) => ctx._slot = Some(slot),
                None => {
                    log::debug!(
                        "request {}: over the connection limits of its listener",
                        request_id::of(session.req_header())
                    );
                    return Box::pin(respond::error(session, 503)).await;
                }
            }
        }
        let req = session.req_header();
        let uri_path = req.uri.path().to_string();
        let path = RequestPath::new(&uri_path);
        ctx.started = Some(std::time::Instant::now());
        if crate::telemetry::access_log::enabled() {
            ctx.original_uri = Some(String::from_utf8_lossy(req.raw_path()).into_owned());
        }
        let Some(found) = snapshot.routes.lookup(&host, &path.decoded) else {
            metrics::NO_ROUTE.inc();
            log::info!(
                "request {}: no route for {host}{}",
                request_id::of(req),
                path.decoded
            );
            let pages = &snapshot.error_pages;
            return Box::pin(pages.send(session, 404, snapshot.timeouts.connect)).await;
        };
        let route = found.route.clone();
        ctx.activity = crate::telemetry::activity::Toucher::new(route.activity.clone());
        ctx.route = Some(route.clone());
        ctx.snapshot = Some(snapshot.clone());
        let rest = &path.decoded[found.prefix_len..];
        let rest = if rest.is_empty() { "/" } else { rest };
        let wire_prefix_len = path.wire_offset(found.prefix_len);

        if let Some(location) = crate::edge::novnc::redirect_for(
            &route,
            &path.wire,
            wire_prefix_len,
            req.uri.query(),
            ctx.upgrade,
        ) {
            return Box::pin(respond::redirect(session, 302, &location)).await;
        }
        if route
            .block
            .iter()
            .any(|b| crate::routing::is_under(rest, b))
        {
            log::info!(
                "request {}: {rest} is blocked on route {}",
                request_id::of(req),
                route.label
            );
            return Box::pin(respond::error(session, 403)).await;
        }
        if let Some(check) = &route.access {
            let mut captures = route.data_captures.clone();
            captures.extend(found.captures.clone());
            // Boxed by the trait (async_trait), like the other rare awaits below.
            if let Some(done) =
                check_access(session, check.as_ref(), &captures, &route.label).await?
            {
                return Ok(done);
            }
        }
        // Boxed where they await something large (a hub lookup, a response): on the common
        // path the request_filter future stays small, and Pingora copies it per request.
        let upstream = match &route.upstream {
            UpstreamRef::Fixed(u) => u.clone(),
            _ => match Box::pin(self.choose_upstream(session, &found, &snapshot)).await? {
                Ok(u) => u,
                Err(responded) => return Ok(responded),
            },
        };
        ctx.upstream = Some(upstream);
        if route.response_rewrite.is_some() {
            ctx.mount = Some(path.wire[..wire_prefix_len].to_string());
        }
        if session
            .req_header()
            .headers
            .get(http::header::HOST)
            .is_none()
            && !ctx.original_host.is_empty()
        {
            // HTTP/2 clients send :authority, not Host; the path rewrite below drops the
            // authority, and HTTP/1 desktops need a Host.
            let host = ctx.original_host.clone();
            session
                .req_header_mut()
                .insert_header(http::header::HOST, host)?;
        }
        if let Some(uri) = crate::edge::forwarding::upstream_target(
            &session.req_header().uri,
            &path.wire,
            wire_prefix_len,
            route.strip_prefix,
            route.target_path.as_deref(),
        ) {
            session.req_header_mut().set_uri(uri);
        }
        if ctx.upgrade {
            // The downstream's HTTP read timeout (60 s in Pingora) would cut a quiet desktop;
            // upgraded streams get their own idle limit (cloudflare/pingora#255).
            session.set_read_timeout(Some(snapshot.timeouts.upgraded_idle));
            session.set_write_timeout(Some(snapshot.timeouts.upgraded_idle));
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(upstream), Some(snapshot)) = (ctx.upstream.clone(), ctx.snapshot.clone()) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        ctx.upstream_started = Some(std::time::Instant::now());
        let key = upstream.pool.as_ref().map_or_else(Vec::new, |pool| {
            pool.request_key(&session.req_header().headers, || client_ip(session))
        });
        let Some((server, in_flight)) = upstream.choose(&key, &ctx.tried) else {
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                format!("no healthy server in upstream {}", upstream.name),
            );
        };
        let peer = upstream
            .peer(&server, &snapshot.timeouts, ctx.upgrade)
            .await
            .map_err(|e| Error::explain(ErrorType::ConnectNoRoute, e).into_up())?;
        ctx.server = Some(server);
        ctx._in_flight = in_flight;
        Ok(peer)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let route = ctx.route.as_ref().expect("request_filter sets the route");
        let client_ip = client_ip(session);
        ctx.user = upstream_request
            .headers
            .get(X_USER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        rewrite_upstream_request(
            upstream_request,
            &Forwarding {
                headers: &ctx
                    .snapshot
                    .as_ref()
                    .expect("request_filter sets the snapshot")
                    .proxy_headers,
                client_ip,
                downstream_tls: self.role.tls,
                original_host: &ctx.original_host,
                listener_port: self.role.port.as_ref(),
                upgrade: ctx.upgrade,
                authorization: ctx.upstream.as_ref().and_then(|u| u.authorization.as_ref()),
                forward_cookies: route.forward_cookies,
                drop_websocket_protocol: route.drop_websocket_protocol,
            },
        );
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(t) = ctx.upstream_started {
            metrics::UPSTREAM_LATENCY.observe(t.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(rewrite) = ctx
            .route
            .as_ref()
            .and_then(|r| r.response_rewrite.as_deref())
        {
            crate::edge::forwarding::rewrite_upstream_response(
                resp,
                rewrite,
                &self.public_origin(ctx),
            );
        }
        if ctx.upgrade && resp.status.as_u16() == 101 {
            ctx.upgraded = true;
            let ws = open_session(session, ctx);
            let close_on_desktop_loss = ctx
                .route
                .as_ref()
                .map_or(Some(1011), |r| r.websocket.close_on_desktop_loss);
            ctx.traffic.open(ws, close_on_desktop_loss);
        }
        // Only answers that worked count as activity (configurable-http-proxy's rule): a flood
        // of 404s or 503s from a stopped server must not keep it looking busy.
        if resp.status.as_u16() < 300 {
            ctx.activity.touch(now_ms());
        }
        request_id::put_on(session.req_header(), resp)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Uploads are activity (WebSocket frames are counted by `edge::tunnel`).
        if body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.activity.touch(now_ms());
        }
        Ok(())
    }

    /// Both upgrade legs go to their own task once the `101` is out (pingora-proxy patch 19):
    /// see `edge::tunnel` for what that saves and what the tunnel keeps doing.
    fn hand_over_upgrades(&self, _session: &Session, ctx: &RequestCtx) -> bool {
        ctx.upgrade
    }

    /// Requests without a body are answered in turn, without Pingora's duplex (pingora-proxy
    /// patch 20): 8 % fewer instructions per request, and a lower tail at a fixed rate.
    fn answer_bodyless_in_turn(&self, _session: &Session, _ctx: &RequestCtx) -> bool {
        true
    }

    fn upgraded_streams(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        streams: pingora::proxy::UpgradedStreams,
    ) {
        ctx.handed_over = true;
        let log = crate::telemetry::access_log::enabled()
            .then(|| Box::new(access_entry(session, None, ctx, 101).pending(ctx.started)));
        let state = crate::edge::tunnel::TunnelState {
            traffic: std::mem::take(&mut ctx.traffic),
            activity: std::mem::take(&mut ctx.activity),
            idle_limit: ctx
                .snapshot
                .as_ref()
                .expect("request_filter sets the snapshot")
                .timeouts
                .upgraded_idle,
            upstream: ctx
                .upstream
                .as_ref()
                .map_or("-", |u| u.name.as_str())
                .to_string(),
            log,
            slot: ctx._slot.take(),
            in_flight: ctx._in_flight.take(),
            max_rate: None,
        };
        crate::edge::tunnel::spawn(streams, state);
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(route) = &ctx.route {
            route.stats.record(status);
        }
        if ctx.handed_over {
            // The tunnel writes the WebSocket's line and closes its session when it ends.
            return;
        }
        // Before Pingora closes the connection.
        ctx.traffic.close();
        if crate::telemetry::access_log::enabled() {
            crate::telemetry::access_log::record(&access_entry(session, e, ctx, status));
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        let closed = matches!(
            e.etype(),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed
        );
        // A browser closing its tab (often without a TLS close_notify) is routine, not an
        // error; logging one ERROR line per closed desktop would bury real problems.
        if closed && e.esource() == &ErrorSource::Downstream {
            return true;
        }
        // (A desktop stopped under an open WebSocket is the tunnel's to report: `edge::tunnel`.)
        false
    }

    /// Pingora's error lines end with this: the request, where it was going, and the id the
    /// browser was given (the answer itself names none of it).
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        format!(
            "{}, route {}, upstream {}{}{}, request id {}",
            session.as_ref().request_summary(),
            ctx.route_label(),
            ctx.upstream.as_ref().map_or("-", |u| u.name.as_str()),
            if ctx.server.is_some() { " server " } else { "" },
            ctx.server.as_deref().unwrap_or(""),
            request_id::of(session.req_header())
        )
    }

    /// A kept-alive upstream connection that fails before any answer went out was stale: the
    /// server closed it or wrote on it while it idled, and the check when it was taken from the
    /// pool ran before the kernel's news reached the reactor. Pingora retries only errors of the
    /// socket itself; bytes that are no answer (a TLS record that does not decrypt, a head that
    /// does not parse) are retried here too, once per stale connection, on a fresh one when the
    /// pool has no other, as nginx does. Only for requests Pingora may repeat. (A well-formed
    /// response written while the connection idled, such as a `408`, still reads as the answer.)
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let repeatable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        let stale = client_reused
            && session.response_written().is_none()
            && matches!(
                e.etype(),
                ErrorType::ReadError | ErrorType::ConnectionClosed | ErrorType::InvalidHTTPHeader
            );
        if !repeatable {
            e.set_retry(false);
        } else if stale {
            metrics::UPSTREAM_RETRIES.inc();
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_failures += 1;
        metrics::UPSTREAM_CONNECT_ERRORS.inc();
        let mut retries = ctx.upstream.as_ref().map_or(0, |u| u.retries);
        if let (Some(pool), Some(server)) = (
            ctx.upstream.as_ref().and_then(|u| u.pool.as_ref()),
            ctx.server.as_ref().and_then(|s| s.parse().ok()),
        ) {
            // Skip it for a while, and try the next healthy server.
            pool.mark_down(server);
            ctx.tried.push(server);
            retries = retries.max(
                ctx.upstream
                    .as_ref()
                    .map_or(0, |u| u.servers.len() as u32 - 1),
            );
        }
        // Nothing reached the upstream yet, so any request may be retried (Apache's retry=).
        if ctx.connect_failures <= retries {
            metrics::UPSTREAM_RETRIES.inc();
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if ctx.upgraded {
            // The 101 went out and its hand-over to the tunnel failed: no page can follow it.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let snapshot = ctx
            .snapshot
            .clone()
            .unwrap_or_else(|| self.gateway.snapshot());
        let own_code = respond::status_for_error(e);
        let code = snapshot.error_pages.upstream_failure(own_code);
        if code > 0 {
            // What failed where is in Pingora's error line (`request_summary`), not the page.
            let pages = &snapshot.error_pages;
            let _ = pages.send(session, code, snapshot.timeouts.connect).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

/// The client's IP address; `None` for a client on a Unix socket.
fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn access_entry<'a>(
    session: &'a Session,
    e: Option<&'a Error>,
    ctx: &'a RequestCtx,
    status: u16,
) -> crate::telemetry::access_log::Entry<'a> {
    let websocket = ctx.upgraded.then(|| {
        let reason = match e {
            None => "closed",
            Some(e) => e.etype().as_str(),
        };
        (ctx.traffic.bytes_up, ctx.traffic.bytes_down, reason)
    });
    let outcome = crate::telemetry::access_log::Outcome {
        status,
        uri: ctx.original_uri.as_deref().unwrap_or("-"),
        route: ctx.route_label(),
        upstream: ctx.upstream.as_ref().map_or("-", |u| u.name.as_str()),
        started: ctx.started,
        client_subject: crate::tls::client_auth::subject_of(session),
        request_id: request_id::of(session.req_header()),
        websocket,
    };
    crate::telemetry::access_log::Entry::new(session, outcome)
}

/// Puts an upgraded connection on the admin page's list of sessions.
fn open_session(session: &Session, ctx: &RequestCtx) -> Arc<crate::telemetry::sessions::Session> {
    let fd = session
        .digest()
        .and_then(|d| d.socket_digest.as_ref())
        .map(|s| s.raw_fd());
    crate::telemetry::sessions::SESSIONS.open(crate::telemetry::sessions::SessionStart {
        route: ctx.route_label().to_string(),
        upstream: ctx
            .upstream
            .as_ref()
            .map_or("-", |u| u.name.as_str())
            .to_string(),
        user: ctx.user.clone(),
        client: client_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
        fd,
    })
}

impl EdgeProxy {
    /// Where the browser reached this answer: for `rewrite_location`.
    fn public_origin<'a>(&self, ctx: &'a RequestCtx) -> crate::edge::forwarding::PublicOrigin<'a> {
        crate::edge::forwarding::PublicOrigin {
            tls: self.role.tls,
            host: &ctx.original_host,
            mount: ctx.mount.as_deref().unwrap_or("/"),
            stripped: ctx.route.as_ref().is_some_and(|r| r.strip_prefix),
            server: ctx.server.as_deref(),
            upstream_tls: ctx.upstream.as_ref().is_some_and(|u| u.tls.is_some()),
        }
    }

    /// `Ok(Ok(upstream))`, or `Ok(Err(true))` when a response (404, redirect, 502) was sent.
    async fn choose_upstream(
        &self,
        session: &mut Session,
        found: &RouteMatch,
        snapshot: &Snapshot,
    ) -> Result<std::result::Result<Arc<Upstream>, bool>> {
        let route = &found.route;
        match &route.upstream {
            UpstreamRef::Fixed(u) => Ok(Ok(u.clone())),
            UpstreamRef::Template(t) => {
                let name = t
                    .fill(&found.captures, |s| s.to_string())
                    .unwrap_or_default();
                match snapshot.upstreams.get(&name) {
                    Some(u) => Ok(Ok(u.clone())),
                    None => Ok(Err(no_desktop(session, route, &name).await?)),
                }
            }
            UpstreamRef::Resolver(r) => match r.resolve(&found.captures).await {
                Resolution::Found(u) => Ok(Ok(u)),
                Resolution::NoDesktop(name) => Ok(Err(no_desktop(session, route, &name).await?)),
                Resolution::Failed { status, reason } => {
                    log::warn!(
                        "request {}: desktop lookup for route {} failed: {reason}",
                        request_id::of(session.req_header()),
                        route.label
                    );
                    Ok(Err(respond::error(session, status).await?))
                }
            },
        }
    }
}

/// Asks the route's access gate and answers what it decided: `Ok(Some(true))` when the
/// request was answered here (denied), `Ok(None)` to go on, with the hub's identity headers.
async fn check_access(
    session: &mut Session,
    gate: &dyn AccessGate,
    captures: &Captures,
    route_label: &str,
) -> Result<Option<bool>> {
    // Identity headers come only from the hub's answer, never from the browser.
    for name in gate.identity_headers() {
        session.req_header_mut().remove_header(name);
    }
    let decision = gate
        .decide(&session.req_header().headers, captures, route_label)
        .await;
    let answered = match decision {
        AccessDecision::Allow(headers) => {
            for (name, value) in headers {
                session.req_header_mut().insert_header(name, value)?;
            }
            return Ok(None);
        }
        AccessDecision::Deny(status) => respond::error(session, status).await?,
        AccessDecision::RedirectToLogin(location) => {
            respond::redirect(session, 302, &location).await?
        }
        AccessDecision::Unavailable => respond::error(session, 503).await?,
    };
    Ok(Some(answered))
}

/// A route matched but names no existing desktop: its fallback redirect, else 404.
async fn no_desktop(session: &mut Session, route: &Route, name: &str) -> Result<bool> {
    match &route.fallback_redirect {
        Some(location) => respond::redirect(session, 302, location).await,
        None => {
            log::info!(
                "request {}: no desktop {name} for route {}",
                request_id::of(session.req_header()),
                route.label
            );
            respond::error(session, 404).await
        }
    }
}

/// An HTTP/1.1 request asking to become a WebSocket (what Pingora forwards as an upgrade).
fn is_websocket_handshake(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

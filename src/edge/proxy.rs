//! The Pingora `ProxyHttp` implementation. Each phase is a short table of contents; the work
//! lives in the modules it calls.
//!
//! Request path, `request_filter`: refuse ambiguous requests (`request_checks`) -> what the
//! listener answers itself (`listener_answer`: ACME, redirects to HTTPS, CHP's health) ->
//! admit (header size, connection limits) -> match the route (`match_route`) -> what the route
//! answers itself (`OnRoute::route_answer`: noVNC redirect, blocked paths) -> check access
//! (`check_access`, the hub's `AccessGate`) -> choose the peer (fixed, named by captures, or
//! the hub's `UpstreamResolver`) -> rewrite the target (`OnRoute::rewrite_request`). A step
//! either goes on or returns an `edge::answer::Answer`, which the phase sends. Then
//! `upstream_peer` (TLS, timeouts) -> `upstream_request_filter` (forwarding headers) -> Pingora
//! proxies; after an upgrade's `101`, `upgraded_streams` hands both connections to
//! `edge::tunnel`.

use crate::edge::answer::{Answer, Step};
use crate::edge::forwarding::{rewrite_upstream_request, Forwarding};
use crate::edge::gateway::{Gateway, Snapshot};
use crate::edge::request_id;
use crate::edge::respond;
use crate::routing::{
    AccessDecision, AccessGate, RequestPath, Resolution, Route, RouteMatch, Template, UpstreamRef,
};
use crate::telemetry::activity::now_ms;
use crate::telemetry::metrics;
use crate::upstream::Upstream;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use std::borrow::Cow;
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
        ctx.original_host = raw_host(session.req_header()).to_string();
        let host = host_without_port(&ctx.original_host).to_ascii_lowercase();
        // Answers are sent boxed, as is anything else large awaited below (a hub's answer): on
        // the common path the request_filter future stays small, and Pingora copies it per
        // request.
        if let Step::Answer(answer) = self.listener_answer(session.req_header(), &host) {
            return Box::pin(answer.send(session)).await;
        }
        ctx.upgrade = session.is_upgrade_req();
        let snapshot = self.gateway.snapshot();
        if let Step::Answer(answer) = self.admit(session, ctx, &snapshot) {
            return Box::pin(answer.send(session)).await;
        }
        ctx.started = Some(std::time::Instant::now());
        if crate::telemetry::access_log::enabled() {
            let target = String::from_utf8_lossy(session.req_header().raw_path()).into_owned();
            ctx.original_uri = Some(target);
        }
        let uri_path = session.req_header().uri.path().to_string();
        let path = RequestPath::new(&uri_path);
        let found = match match_route(session.req_header(), &snapshot, &host, &path) {
            Step::Next(found) => found,
            Step::Answer(answer) => return Box::pin(answer.send(session)).await,
        };
        let route = found.route.clone();
        ctx.activity = crate::telemetry::activity::Toucher::new(route.activity.clone());
        ctx.route = Some(route.clone());
        ctx.snapshot = Some(snapshot.clone());
        let wire_prefix_len = path.wire_offset(found.prefix_len);
        let on_route = OnRoute {
            route: &route,
            path: &path,
            prefix_len: found.prefix_len,
            wire_prefix_len,
        };
        if let Step::Answer(answer) = on_route.route_answer(session.req_header(), ctx.upgrade) {
            return Box::pin(answer.send(session)).await;
        }
        if let Some(gate) = &route.access {
            // Boxed by the trait (async_trait), like the hub lookup below.
            if let Step::Answer(answer) = check_access(session, gate.as_ref(), &found).await? {
                return Box::pin(answer.send(session)).await;
            }
        }
        // Choose the peer: a fixed upstream, one named by the route's captures, or the hub's.
        let resolution = match &route.upstream {
            UpstreamRef::Fixed(upstream) => Resolution::Found(upstream.clone()),
            UpstreamRef::Template(name) => desktop_named(name, &found, &snapshot),
            UpstreamRef::Resolver(hub) => hub.resolve(&found.captures).await,
        };
        let upstream = match found_upstream(session.req_header(), &route, resolution) {
            Step::Next(upstream) => upstream,
            Step::Answer(answer) => return Box::pin(answer.send(session)).await,
        };
        ctx.upstream = Some(upstream);
        if route.response_rewrite.is_some() {
            ctx.mount = Some(path.wire[..wire_prefix_len].to_string());
        }
        on_route.rewrite_request(session, &ctx.original_host)?;
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
            .map_err(|e| {
                let context = format!("server {server} of upstream {}", upstream.name);
                Error::because(ErrorType::ConnectNoRoute, context, e).into_up()
            })?;
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
            let websocket = ctx.route.as_ref().map(|r| r.websocket).unwrap_or_default();
            let deflate = resp
                .headers
                .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
                .iter()
                .any(|v| v.as_bytes().windows(18).any(|w| w == b"permessage-deflate"));
            ctx.traffic
                .open(ws, websocket.close_on_desktop_loss, deflate);
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
            max_rate: ctx.route.as_ref().and_then(|r| r.websocket.max_rate),
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
    /// What the listener itself answers, before any route: ACME's HTTP-01 token on plain
    /// listeners (before any redirect to HTTPS), the redirect of a redirect-only listener,
    /// configurable-http-proxy's health endpoint.
    fn listener_answer(&self, req: &RequestHeader, host: &str) -> Step {
        if !self.role.tls {
            if let Some(token) = crate::tls::challenges::CHALLENGES.http_answer(req.uri.path()) {
                return Step::Answer(Answer::Body {
                    content_type: "text/plain",
                    body: token.into_bytes().into(),
                });
            }
        }
        let path_and_query = || req.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(origin) = &self.role.redirect_to {
            let location = format!("{origin}{}", path_and_query());
            return Step::Answer(Answer::Redirect {
                status: 308,
                location,
            });
        }
        if let Some(port) = self.role.redirect_https_port {
            let location = respond::https_location(host, port, path_and_query());
            return Step::Answer(Answer::Redirect {
                status: 308,
                location,
            });
        }
        if req.uri.path() == "/_chp_healthz" {
            // configurable-http-proxy's health endpoint, which load balancers in front of
            // JupyterHub poll.
            return Step::Answer(Answer::Body {
                content_type: "application/json",
                body: Cow::Borrowed(br#"{"status":"OK"}"#),
            });
        }
        Step::Next(())
    }

    /// Whether the request may go on at all: headers within `max_header_bytes` (each field
    /// within `max_header_field_bytes`), a WebSocket
    /// handshake without a body, a place under the listener's connection limits (held in
    /// `ctx` until the request ends).
    fn admit(&self, session: &mut Session, ctx: &mut RequestCtx, snapshot: &Snapshot) -> Step {
        let req = session.req_header();
        let mut header_bytes = req.raw_path().len();
        let mut longest_field = 0;
        for (name, value) in req.headers.iter() {
            let field = name.as_str().len() + 2 + value.len();
            header_bytes += field + 2;
            longest_field = longest_field.max(field);
        }
        if header_bytes > snapshot.max_header_bytes
            || longest_field > snapshot.max_header_field_bytes
        {
            return Step::Answer(Answer::Error(431));
        }
        if ctx.upgrade && is_websocket_handshake(session) && !session.is_body_empty() {
            // A WebSocket handshake ends at its head, and its connections go to `edge::tunnel`
            // once the 101 is out (vendored pingora-proxy 02). With a body, Pingora would relay
            // the upgraded stream inside the request instead: the path deskgate no longer keeps.
            log::debug!(
                "request {}: refused: a WebSocket handshake with a body",
                request_id::of(session.req_header())
            );
            return Step::Answer(Answer::Error(400));
        }
        if !self.limits.is_unlimited() {
            match self.limits.acquire(client_ip(session)) {
                Some(slot) => ctx._slot = Some(slot),
                None => {
                    log::debug!(
                        "request {}: over the connection limits of its listener",
                        request_id::of(session.req_header())
                    );
                    return Step::Answer(Answer::Error(503));
                }
            }
        }
        Step::Next(())
    }

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
}

/// The route this request matched, and where its prefix ends in the request's path.
struct OnRoute<'a> {
    route: &'a Route,
    path: &'a RequestPath<'a>,
    /// The prefix's length in the decoded path, and in the path as the client wrote it.
    prefix_len: usize,
    wire_prefix_len: usize,
}

impl OnRoute<'_> {
    /// What the route answers itself: noVNC's page sent to carry its WebSocket path
    /// (`edge::novnc`), a path under one of the route's `block:` prefixes.
    fn route_answer(&self, req: &RequestHeader, upgrade: bool) -> Step {
        let route = self.route;
        if let Some(location) = crate::edge::novnc::redirect_for(
            route,
            &self.path.wire,
            self.wire_prefix_len,
            req.uri.query(),
            upgrade,
        ) {
            return Step::Answer(Answer::Redirect {
                status: 302,
                location,
            });
        }
        let rest = &self.path.decoded[self.prefix_len..];
        let rest = if rest.is_empty() { "/" } else { rest };
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
            return Step::Answer(Answer::Error(403));
        }
        Step::Next(())
    }

    /// The request as the upstream gets it: a `Host` (HTTP/2 clients send `:authority`, which
    /// the rewritten target drops, and HTTP/1 desktops need one), and the target with the
    /// route's prefix stripped or its target path put in front (`edge::forwarding`).
    fn rewrite_request(&self, session: &mut Session, original_host: &str) -> Result<()> {
        let req = session.req_header_mut();
        if req.headers.get(http::header::HOST).is_none() && !original_host.is_empty() {
            req.insert_header(http::header::HOST, original_host.to_string())?;
        }
        if let Some(uri) = crate::edge::forwarding::upstream_target(
            &req.uri,
            &self.path.wire,
            self.wire_prefix_len,
            self.route.strip_prefix,
            self.route.target_path.as_deref(),
        ) {
            req.set_uri(uri);
        }
        Ok(())
    }
}

/// The route for the request's host and path; the error page (404) when none takes it.
fn match_route(
    req: &RequestHeader,
    snapshot: &Snapshot,
    host: &str,
    path: &RequestPath,
) -> Step<RouteMatch> {
    match snapshot.routes.lookup(host, &path.decoded) {
        Some(found) => Step::Next(found),
        None => {
            metrics::NO_ROUTE.inc();
            log::info!(
                "request {}: no route for {host}{}",
                request_id::of(req),
                path.decoded
            );
            Step::Answer(Answer::ErrorPage {
                status: 404,
                pages: snapshot.error_pages.clone(),
                timeout: snapshot.timeouts.connect,
            })
        }
    }
}

/// Asks the route's access gate; an allowed request goes on with the hub's identity headers,
/// any other decision is answered (`AccessDecision` says with what).
async fn check_access(
    session: &mut Session,
    gate: &dyn AccessGate,
    found: &RouteMatch,
) -> Result<Step> {
    let mut captures = found.route.data_captures.clone();
    captures.extend(found.captures.clone());
    // Identity headers come only from the hub's answer, never from the browser.
    for name in gate.identity_headers() {
        session.req_header_mut().remove_header(name);
    }
    let decision = gate
        .decide(&session.req_header().headers, &captures, &found.route.label)
        .await;
    let answer = match decision {
        AccessDecision::Allow(headers) => {
            for (name, value) in headers {
                session.req_header_mut().insert_header(name, value)?;
            }
            return Ok(Step::Next(()));
        }
        AccessDecision::Deny(status) => Answer::Error(status),
        AccessDecision::RedirectToLogin(location) => Answer::Redirect {
            status: 302,
            location,
        },
        AccessDecision::Unavailable => Answer::Error(503),
    };
    Ok(Step::Answer(answer))
}

/// A desktop named by the route's captures (`upstream: desktop-{name}`), among the configured
/// upstreams.
fn desktop_named(name: &Template, found: &RouteMatch, snapshot: &Snapshot) -> Resolution {
    let name = name
        .fill(&found.captures, |s| s.to_string())
        .unwrap_or_default();
    match snapshot.upstreams.get(&name) {
        Some(upstream) => Resolution::Found(upstream.clone()),
        None => Resolution::NoDesktop(name),
    }
}

/// The upstream the route's lookup found; else the route's fallback redirect or 404 for a
/// desktop that does not exist, the lookup's status when the hub could not be asked.
fn found_upstream(
    req: &RequestHeader,
    route: &Route,
    resolution: Resolution,
) -> Step<Arc<Upstream>> {
    let answer = match resolution {
        Resolution::Found(upstream) => return Step::Next(upstream),
        Resolution::NoDesktop(name) => match &route.fallback_redirect {
            Some(location) => Answer::Redirect {
                status: 302,
                location: location.clone(),
            },
            None => {
                log::info!(
                    "request {}: no desktop {name} for route {}",
                    request_id::of(req),
                    route.label
                );
                Answer::Error(404)
            }
        },
        Resolution::Failed { status, reason } => {
            log::warn!(
                "request {}: desktop lookup for route {} failed: {reason}",
                request_id::of(req),
                route.label
            );
            Answer::Error(status)
        }
    };
    Step::Answer(answer)
}

/// An HTTP/1.1 request asking to become a WebSocket (what Pingora forwards as an upgrade).
fn is_websocket_handshake(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

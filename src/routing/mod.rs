//! Where a request goes: the route table and its matching rules.
//!
//! [`Routes`] is an immutable snapshot of two tiers: the configured [`RouteTable`] (YAML
//! routes, built on start and reload) and the [`RuntimeTable`] of routes the hub registers at
//! run time, in front of it (a persistent map: one change copies O(log n) of it, never the
//! configured table). A change makes a new snapshot swapped in atomically (`arc_swap`); the
//! request path only reads it and never takes a lock.
//!
//! Matching, in order:
//! 1. routes naming the request's exact host, then routes with a host pattern
//!    (`desktop-{name}.hub...` before `*.hub...`), then routes for any host;
//! 2. within that tier, the longest path prefix wins, on `/` boundaries
//!    (`/desktop/alice/` matches `/desktop/alice` and `/desktop/alice/x`, never `/desktop/alicex`);
//!    at equal length a literal prefix beats one with captures, and a runtime route beats a
//!    configured one (as in configurable-http-proxy, the hub's registration wins).
//! Literal prefixes are hash lookups along the path's `/` boundaries, so 10,000 runtime routes
//! cost about what 10 do (`bench/benches/route_lookup.rs`).
//!
//! The table only matches. What a matched route asks of others (an access check, a lookup of
//! its upstream) it holds as the small interfaces below, which the hub implements and the
//! edge calls; routing imports neither.

pub mod pattern;
pub mod response_rewrite;
pub mod runtime;

use crate::telemetry::activity::Activity;
use crate::telemetry::metrics::RouteStats;
use crate::upstream::Upstream;
use async_trait::async_trait;
pub use pattern::{Captures, PatternError, Template};
pub use runtime::RuntimeTable;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum HostPattern {
    Exact(String),
    /// `*.hub.example.org`, stored as `.hub.example.org`.
    Suffix(String),
    Captures(Template),
}

impl HostPattern {
    pub fn parse(raw: &str) -> Result<HostPattern, PatternError> {
        let host = raw.trim().to_ascii_lowercase();
        let raw_owned = || raw.to_string();
        if host.is_empty() || host.contains('/') || host.contains(':') {
            return Err(PatternError::NotAHost { raw: raw_owned() });
        }
        if let Some(suffix) = host.strip_prefix('*') {
            if !suffix.starts_with('.') || suffix.contains('*') {
                return Err(PatternError::Wildcard { raw: raw_owned() });
            }
            return Ok(HostPattern::Suffix(suffix.to_string()));
        }
        if host.contains('*') {
            return Err(PatternError::StarInside { raw: raw_owned() });
        }
        let t = Template::parse(&host)?;
        Ok(if t.has_captures() {
            HostPattern::Captures(t)
        } else {
            HostPattern::Exact(host)
        })
    }

    fn matches(&self, host: &str, caps: &mut Captures) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostPattern::Captures(t) => t.matches(host, '.', caps),
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Suffix(s) => format!("*{s}"),
            HostPattern::Captures(t) => t.to_string(),
        }
    }

    /// Higher is more specific; ties keep config order.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Captures(t) => (1, t.as_str().len()),
            HostPattern::Suffix(s) => (0, s.len()),
        }
    }
}

#[derive(Clone, Debug)]
enum Segment {
    Literal(String),
    Pattern(Template),
}

/// A path prefix such as `/`, `/api/` or `/desktop/{name}/`; captures span one whole segment
/// or part of one (`/desktop/{user}-{type}/`).
#[derive(Clone, Debug)]
pub struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(raw: &str) -> Result<PathPattern, PatternError> {
        if !raw.starts_with('/') {
            return Err(PatternError::NoLeadingSlash {
                raw: raw.to_string(),
            });
        }
        if raw.contains(['?', '#']) {
            return Err(PatternError::QueryInPath {
                raw: raw.to_string(),
            });
        }
        let mut segments = Vec::new();
        for s in raw.split('/').filter(|s| !s.is_empty()) {
            let t = Template::parse(s)?;
            segments.push(if t.has_captures() {
                Segment::Pattern(t)
            } else {
                Segment::Literal(s.to_string())
            });
        }
        Ok(PathPattern {
            raw: raw.to_string(),
            segments,
        })
    }

    /// A literal prefix as the admin API gives it; braces are not captures here.
    pub fn literal(raw: &str) -> PathPattern {
        let segments = raw
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| Segment::Literal(s.to_string()))
            .collect();
        PathPattern {
            raw: if raw.ends_with('/') {
                raw.to_string()
            } else {
                format!("{raw}/")
            },
            segments,
        }
    }

    pub fn root() -> PathPattern {
        PathPattern {
            raw: "/".into(),
            segments: Vec::new(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn capture_names(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Pattern(t) => {
                    Some(t.capture_names().map(str::to_string).collect::<Vec<_>>())
                }
                Segment::Literal(_) => None,
            })
            .flatten()
            .collect()
    }

    /// The prefix as a literal key (`/desktop/alice/` -> `/desktop/alice`, `/` -> ``), or None
    /// when it has captures.
    fn literal_key(&self) -> Option<String> {
        let mut key = String::new();
        for s in &self.segments {
            match s {
                Segment::Literal(l) => {
                    key.push('/');
                    key.push_str(l);
                }
                Segment::Pattern(_) => return None,
            }
        }
        Some(key)
    }

    /// Length in bytes of the prefix of `path` this pattern matches, on a segment boundary.
    fn match_prefix(&self, path: &str, caps: &mut Captures) -> Option<usize> {
        let mark_len = caps.len();
        let mut consumed = 0;
        for seg in &self.segments {
            let rest = &path[consumed..];
            let Some(rest) = rest.strip_prefix('/') else {
                caps.truncate(mark_len);
                return None;
            };
            let end = rest.find('/').unwrap_or(rest.len());
            let text = &rest[..end];
            let ok = match seg {
                Segment::Literal(l) => l == text,
                Segment::Pattern(t) => t.matches(text, '/', caps),
            };
            if !ok {
                caps.truncate(mark_len);
                return None;
            }
            consumed += 1 + end;
        }
        Some(consumed)
    }
}

/// A route's access check (`auth:`; the hub's `hub::access::AccessCheck`), run by the edge
/// before anything is forwarded, upgrades included. It decides; the edge answers.
#[async_trait]
pub trait AccessGate: Send + Sync {
    /// Headers only the gate's answer may set (`X-User`...): the edge removes the client's
    /// before it asks, so they never come from the browser.
    fn identity_headers(&self) -> &[http::HeaderName];

    /// Decides on a request from its headers (`Cookie`, `Authorization`) and the route's
    /// captures (`{name}` in the hub's URL).
    async fn decide(
        &self,
        headers: &http::HeaderMap,
        captures: &Captures,
        route_label: &str,
    ) -> AccessDecision;
}

/// What an [`AccessGate`] decided, for the edge to answer.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessDecision {
    /// Go on, with these headers set on the upstream request (who the hub vouched for).
    Allow(Vec<(http::HeaderName, http::HeaderValue)>),
    /// Answer this status (403, or the hub's 401).
    Deny(u16),
    /// Send the browser to the login page (302).
    RedirectToLogin(String),
    /// The hub could not be asked, or answered nonsense: 503, fail closed.
    Unavailable,
}

/// Finds a route's upstream per request by asking someone else (the hub's
/// `hub::resolver::Resolver`: Apache's RewriteMap, Kasm's container lookup).
#[async_trait]
pub trait UpstreamResolver: Send + Sync {
    async fn resolve(&self, captures: &Captures) -> Resolution;
}

/// What an [`UpstreamResolver`] found.
#[derive(Clone)]
pub enum Resolution {
    Found(Arc<Upstream>),
    /// The hub knows no desktop by this name (the route's fallback, else 404).
    NoDesktop(String),
    /// The lookup failed: `status` for the browser, `reason` (the hub's URL, what went wrong)
    /// for the log only.
    Failed {
        status: u16,
        reason: String,
    },
}

/// How a route finds its upstream.
#[derive(Clone)]
pub enum UpstreamRef {
    Fixed(Arc<Upstream>),
    /// A name filled from captures, looked up among configured upstreams (`desktop-{name}`).
    Template(Template),
    /// Asked of the hub per name (Apache RewriteMap / Kasm pattern).
    Resolver(Arc<dyn UpstreamResolver>),
}

/// One route; the same type serves YAML routes and runtime routes.
pub struct Route {
    /// How responses and logs name this route: `desktop-{name}.hub.example.org/` or `/desktop/{name}/`.
    pub label: String,
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    pub upstream: UpstreamRef,
    pub strip_prefix: bool,
    pub block: Vec<String>,
    pub novnc: bool,
    pub access: Option<Arc<dyn AccessGate>>,
    pub fallback_redirect: Option<String>,
    pub drop_websocket_protocol: bool,
    pub forward_cookies: bool,
    /// `rewrite_location`/`cookie_domain`/`cookie_path`: None (nothing to do) on most routes.
    pub response_rewrite: Option<Arc<response_rewrite::ResponseRewrite>>,
    /// The path of a runtime route's target URL (`http://host:port/base/`), put in front of
    /// what the upstream is sent (configurable-http-proxy's `prepend_path`).
    pub target_path: Option<String>,
    /// Set for routes registered through the admin API: their activity clock.
    pub activity: Option<Arc<Activity>>,
    /// Placeholder values from a runtime route's data (`{name}` in `dynamic.auth.url`).
    pub data_captures: Captures,
    /// Requests by status class, for `/metrics` (runtime routes share one).
    pub stats: Arc<RouteStats>,
    /// The route's `websocket:` settings (the top-level ones where it sets none).
    pub websocket: WebSocketSettings,
}

/// The `websocket:` block: how deskgate treats a route's upgraded connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebSocketSettings {
    /// The close code deskgate sends the browser when the desktop's connection ends while
    /// both sides are open (no close frame either way); `None`: the browser sees the drop.
    pub close_on_desktop_loss: Option<u16>,
    /// `max_rate`/`burst`: the cap on the desktop -> browser direction of each session
    /// (`edge::rate_cap`); `None`: no cap.
    pub max_rate: Option<RateCap>,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        // 1011 (server error): what noVNC shows as a server problem instead of 1006.
        WebSocketSettings {
            close_on_desktop_loss: Some(1011),
            max_rate: None,
        }
    }
}

/// A cap on one session's desktop -> browser rate (`websocket.max_rate`, `websocket.burst`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateCap {
    /// Bytes per second, long-run.
    pub bytes_per_sec: u64,
    /// Bytes that may go at once after a quiet spell (the bucket's size).
    pub burst: u64,
}

impl RateCap {
    /// The burst when none is configured: an eighth of a second at the rate, at least 64 KiB
    /// (one read).
    pub fn default_burst(bytes_per_sec: u64) -> u64 {
        (bytes_per_sec / 8).max(64 * 1024)
    }
}

impl Route {
    /// A route with default settings (no stripping, blocking, access check...); set the rest
    /// with struct update syntax.
    pub fn new(host: Option<HostPattern>, path: PathPattern, upstream: UpstreamRef) -> Route {
        let label = Route::label_for(host.as_ref(), &path);
        Route {
            stats: Arc::new(RouteStats::for_route(&label)),
            label,
            host,
            path,
            upstream,
            strip_prefix: false,
            block: Vec::new(),
            novnc: false,
            access: None,
            fallback_redirect: None,
            drop_websocket_protocol: false,
            forward_cookies: true,
            response_rewrite: None,
            target_path: None,
            activity: None,
            data_captures: Captures::default(),
            websocket: WebSocketSettings::default(),
        }
    }

    pub fn label_for(host: Option<&HostPattern>, path: &PathPattern) -> String {
        match host {
            Some(h) => format!("{}{}", h.as_string(), path.as_str()),
            None => path.as_str().to_string(),
        }
    }
}

pub struct RouteMatch {
    pub route: Arc<Route>,
    pub captures: Captures,
    /// Bytes of the request path covered by the route's prefix (what `strip_prefix` removes).
    pub prefix_len: usize,
}

/// The hasher of the route maps, hashed once or twice per `/` boundary of every request path:
/// foldhash (seeded per map) instead of SipHash. Hash flooding needs keys an attacker inserts;
/// routes come from the config and the hub, requests only look them up.
pub(crate) type RouteHasher = foldhash::fast::RandomState;

#[derive(Default)]
struct Tier {
    literals: HashMap<Box<str>, Arc<Route>, RouteHasher>,
    patterns: Vec<Arc<Route>>,
}

impl Tier {
    fn insert(&mut self, route: Arc<Route>) {
        match route.path.literal_key() {
            // First one wins; config validation rejects duplicates.
            Some(key) => {
                self.literals.entry(key.into_boxed_str()).or_insert(route);
            }
            None => self.patterns.push(route),
        }
    }
}

/// The best route in one tier (an exact host, or any host) for `path`: the longest literal
/// prefix among the runtime routes (`runtime`, first: at equal host and path the hub's
/// registration wins, as in configurable-http-proxy) and the configured literals, unless one
/// of the configured patterns matches a strictly longer prefix.
fn lookup_tier(
    configured: Option<&Tier>,
    runtime: Option<&runtime::Paths>,
    path: &str,
    caps: &mut Captures,
) -> Option<(Arc<Route>, usize)> {
    let literals = configured.map(|t| &t.literals).filter(|l| !l.is_empty());
    let mut best: Option<(Arc<Route>, usize)> = None;
    if literals.is_some() || runtime.is_some() {
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        loop {
            let found = runtime
                .and_then(|r| r.get(candidate))
                .or_else(|| literals.and_then(|l| l.get(candidate)));
            if let Some(r) = found {
                best = Some((r.clone(), candidate.len()));
                break;
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => break,
            }
        }
    }
    for r in configured.map_or(&[][..], |t| &t.patterns[..]) {
        let mut found = Captures::default();
        if let Some(len) = r.path.match_prefix(path, &mut found) {
            if best.as_ref().is_none_or(|(_, b)| len > *b) {
                *caps = found;
                best = Some((r.clone(), len));
            }
        }
    }
    best
}

/// The configured routes (from YAML), built once per config and read by every request.
#[derive(Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, Tier>,
    host_patterns: Vec<(HostPattern, Tier)>,
    any_host: Tier,
    len: usize,
}

impl RouteTable {
    pub fn build(routes: impl IntoIterator<Item = Arc<Route>>) -> RouteTable {
        let mut t = RouteTable::default();
        for r in routes {
            t.len += 1;
            match &r.host {
                None => t.any_host.insert(r),
                Some(HostPattern::Exact(h)) => {
                    t.exact_hosts.entry(h.clone()).or_default().insert(r)
                }
                Some(p) => {
                    let key = p.as_string();
                    match t
                        .host_patterns
                        .iter_mut()
                        .find(|(hp, _)| hp.as_string() == key)
                    {
                        Some((_, tier)) => tier.insert(r),
                        None => {
                            let mut tier = Tier::default();
                            let hp = p.clone();
                            tier.insert(r);
                            t.host_patterns.push((hp, tier));
                        }
                    }
                }
            }
        }
        // Stable sort keeps config order among equally specific patterns.
        t.host_patterns.sort_by(|a, b| b.0.rank().cmp(&a.0.rank()));
        t
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `host` is lowercase without port; `path` has no query string.
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteMatch> {
        self.lookup_with(None, host, path)
    }

    /// The lookup over this table and, when given, a tier of runtime routes in front of it
    /// (what [`Routes::lookup`] does): the same result as one table built from the runtime
    /// routes followed by these.
    fn lookup_with(
        &self,
        runtime: Option<&RuntimeTable>,
        host: &str,
        path: &str,
    ) -> Option<RouteMatch> {
        let mut caps = Captures::default();
        let runtime_host = runtime.and_then(|r| r.host(host));
        let configured_host = self.exact_hosts.get(host);
        if runtime_host.is_some() || configured_host.is_some() {
            if let Some((route, prefix_len)) =
                lookup_tier(configured_host, runtime_host, path, &mut caps)
            {
                return Some(RouteMatch {
                    route,
                    captures: caps,
                    prefix_len,
                });
            }
        }
        for (pattern, tier) in &self.host_patterns {
            let mut host_caps = Captures::default();
            if pattern.matches(host, &mut host_caps) {
                let mut path_caps = Captures::default();
                if let Some((route, prefix_len)) =
                    lookup_tier(Some(tier), None, path, &mut path_caps)
                {
                    host_caps.extend(path_caps);
                    return Some(RouteMatch {
                        route,
                        captures: host_caps,
                        prefix_len,
                    });
                }
            }
        }
        let runtime_any = runtime.and_then(RuntimeTable::any_host);
        let (route, prefix_len) = lookup_tier(Some(&self.any_host), runtime_any, path, &mut caps)?;
        Some(RouteMatch {
            route,
            captures: caps,
            prefix_len,
        })
    }
}

/// What requests are routed by: the configured table (rebuilt on reload only) and the runtime
/// routes in front of it (changed one route at a time). Cloning is O(1).
#[derive(Clone, Default)]
pub struct Routes {
    pub configured: Arc<RouteTable>,
    pub runtime: RuntimeTable,
}

impl Routes {
    /// `host` is lowercase without port; `path` has no query string. Runtime routes win at
    /// equal host and path; otherwise as [`RouteTable::lookup`].
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteMatch> {
        self.configured.lookup_with(Some(&self.runtime), host, path)
    }

    pub fn len(&self) -> usize {
        self.configured.len() + self.runtime.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `path` is `prefix` or below it, on a segment boundary (`/api` and `/api/x` are under `/api/`).
pub fn is_under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    path == p || (path.starts_with(p) && path.as_bytes().get(p.len()) == Some(&b'/'))
}

/// Resolves `.` and `..` segments and empty segments, so `/desktop/alice/../bob/` cannot ride
/// alice's route (and access check) to reach another prefix, and `//api/` cannot dodge `block`.
pub fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    let suspicious = path.contains("//") || path.contains("/.") || path.contains('%');
    if !suspicious {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded_dots = path.replace("%2e", ".").replace("%2E", ".");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded_dots.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    let trailing = decoded_dots.ends_with('/')
        || decoded_dots.ends_with("/.")
        || decoded_dots.ends_with("/..");
    if s.is_empty() || trailing {
        s.push('/');
    }
    std::borrow::Cow::Owned(s)
}

/// A request path in the two spellings routing needs: `wire`, as the client sent it with dot
/// segments resolved (still percent-encoded; what the upstream is sent), and `decoded`, what
/// routes, captures and `block:` are matched against, so `/desktop/alice/%61pi/` cannot dodge
/// `block: ["/api/"]` and `/has%20space/` reaches the route registered as `/has space`
/// (configurable-http-proxy matches decoded paths too). `%2F` stays encoded in `decoded`, so
/// both spellings have the same `/` segments.
pub struct RequestPath<'a> {
    pub wire: std::borrow::Cow<'a, str>,
    pub decoded: std::borrow::Cow<'a, str>,
}

impl<'a> RequestPath<'a> {
    pub fn new(raw: &'a str) -> RequestPath<'a> {
        let wire = normalize_path(raw);
        let decoded = if wire.contains('%') {
            std::borrow::Cow::Owned(decode_keeping_slashes(&wire))
        } else {
            wire.clone()
        };
        RequestPath { wire, decoded }
    }

    /// The offset in `wire` of the segment boundary at `decoded_len` in `decoded` (a route's
    /// prefix length, which is always on a boundary).
    pub fn wire_offset(&self, decoded_len: usize) -> usize {
        if matches!(self.decoded, std::borrow::Cow::Borrowed(_)) || decoded_len == 0 {
            return decoded_len;
        }
        if decoded_len >= self.decoded.len() {
            return self.wire.len();
        }
        // A boundary is at a `/` (the prefix ends before it) or just after one.
        let before = &self.decoded[..decoded_len];
        let (slashes, after_slash) = if self.decoded.as_bytes()[decoded_len] == b'/' {
            (before.matches('/').count() + 1, false)
        } else {
            (before.matches('/').count(), true)
        };
        match self.wire.match_indices('/').nth(slashes - 1) {
            Some((i, _)) => i + usize::from(after_slash),
            None => self.wire.len(),
        }
    }
}

fn decode_keeping_slashes(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b'/') | None => out.push(b'%'),
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
        } else {
            out.push(bytes[i]);
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests;

//! Routes the hub registers at run time, through the configurable-http-proxy API (the one
//! JupyterHub speaks): `prefix -> {"target": URL, ...extra data}`, each with a `last_activity`
//! clock moved by proxied requests and by bytes on upgraded WebSockets.
//!
//! Every change rebuilds the routing snapshot (`Gateway::set_runtime_routes`) and rewrites the
//! state file atomically (write, fsync, rename, fsync dir), so routes survive a restart.

use crate::edge::gateway::Gateway;
use crate::routing::pattern::Captures;
use crate::routing::{AccessGate, HostPattern, PathPattern, Route, UpstreamRef};
use crate::telemetry::activity::{now_ms, Activity};
use crate::upstream::settings::UpstreamTls;
use crate::upstream::Upstream;
use http::HeaderValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Settings applied to routes the hub registers at run time (the `dynamic:` block).
#[derive(Clone)]
pub struct DynamicSettings {
    pub tls: Option<UpstreamTls>,
    pub authorization: Option<HeaderValue>,
    pub block: Vec<String>,
    pub access: Option<Arc<dyn AccessGate>>,
    pub novnc: bool,
    pub strip_prefix: bool,
    /// A target URL's path goes in front of the request path (configurable-http-proxy's
    /// default; `--no-prepend-path` turns it off).
    pub prepend_path: bool,
    /// Every route's first segment is a host (`/alice.hub.test/...`), as with
    /// configurable-http-proxy's `--host-routing`; without it, only a first segment with a dot is.
    pub host_routing: bool,
    /// The top-level `websocket:` block.
    pub websocket: crate::routing::WebSocketSettings,
}

struct Entry {
    target: String,
    data: Map<String, Value>,
    activity: Arc<Activity>,
    route: Arc<Route>,
}

pub struct RuntimeRoutes {
    entries: Mutex<BTreeMap<String, Entry>>,
    gateway: Arc<Gateway>,
    dynamic: Mutex<DynamicSettings>,
    state_file: Option<PathBuf>,
}

#[derive(Debug)]
pub enum RouteError {
    BadRequest(String),
    Storage(String),
}

/// `/desktop/alice/` -> `/desktop/alice`; percent-decoded; `/` stays `/`.
pub fn normalize_prefix(raw: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    let mut p = String::with_capacity(decoded.len() + 1);
    if !decoded.starts_with('/') {
        p.push('/');
    }
    p.push_str(&decoded);
    while p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    p
}

/// Splits configurable-http-proxy's host routing form `/host.example.org/path` into host and
/// path; with `host_routing` every first segment is a host, else only one with a dot.
fn split_host(prefix: &str, host_routing: bool) -> (Option<String>, String) {
    let rest = &prefix[1..];
    let (first, path) = rest.split_once('/').map_or((rest, ""), |(a, b)| (a, b));
    if !first.is_empty() && (host_routing || first.contains('.')) {
        (Some(first.to_ascii_lowercase()), format!("/{path}"))
    } else {
        (None, prefix.to_string())
    }
}

impl RuntimeRoutes {
    pub fn new(
        gateway: Arc<Gateway>,
        dynamic: DynamicSettings,
        state_file: Option<PathBuf>,
    ) -> Arc<RuntimeRoutes> {
        let rr = Arc::new(RuntimeRoutes {
            entries: Mutex::new(BTreeMap::new()),
            gateway,
            dynamic: Mutex::new(dynamic),
            state_file,
        });
        if let Some(path) = &rr.state_file {
            match load_state(path) {
                Ok(saved) => {
                    let mut entries = rr.entries.lock().expect("routes lock");
                    for (prefix, data) in saved {
                        let last = data
                            .get("last_activity")
                            .and_then(Value::as_str)
                            .and_then(parse_iso8601)
                            .unwrap_or_else(now_ms);
                        match rr.build_entry(&prefix, data, Arc::new(Activity::at(last))) {
                            Ok(e) => {
                                entries.insert(prefix, e);
                            }
                            Err(e) => log::warn!(
                                "state file {}: skipping route {prefix}: {e:?}",
                                path.display()
                            ),
                        }
                    }
                    log::info!(
                        "loaded {} runtime routes from {}",
                        entries.len(),
                        path.display()
                    );
                    drop(entries);
                    rr.publish_locked(&rr.entries.lock().expect("routes lock"));
                }
                Err(e) => log::warn!(
                    "state file {}: {e}; starting with no runtime routes",
                    path.display()
                ),
            }
        }
        rr
    }

    /// New settings for runtime routes after a reload: rebuild every route with them.
    pub fn set_dynamic(&self, dynamic: DynamicSettings) {
        *self.dynamic.lock().expect("dynamic lock") = dynamic;
        let mut entries = self.entries.lock().expect("routes lock");
        let old = std::mem::take(&mut *entries);
        for (prefix, e) in old {
            let mut data = e.data.clone();
            data.insert("target".into(), Value::String(e.target.clone()));
            match self.build_entry(&prefix, data, e.activity.clone()) {
                Ok(n) => {
                    entries.insert(prefix, n);
                }
                Err(_) => {
                    entries.insert(prefix, e);
                }
            }
        }
        self.publish_locked(&entries);
    }

    fn build_entry(
        &self,
        prefix: &str,
        mut data: Map<String, Value>,
        activity: Arc<Activity>,
    ) -> Result<Entry, RouteError> {
        let target = match data.remove("target") {
            Some(Value::String(t)) if !t.is_empty() => t,
            _ => {
                return Err(RouteError::BadRequest(
                    "the body needs \"target\": \"https://host:port\"".into(),
                ))
            }
        };
        data.remove("last_activity");
        let dynamic = self.dynamic.lock().expect("dynamic lock").clone();
        let upstream = Upstream::from_target(
            prefix,
            &target,
            dynamic.tls.clone(),
            dynamic.authorization.clone(),
        )
        .map_err(|e| RouteError::BadRequest(e.to_string()))?;
        let (host, path) = split_host(prefix, dynamic.host_routing);
        let host = host.map(HostPattern::Exact);
        let path = PathPattern::literal(&path);
        let flag =
            |key: &str, default: bool| data.get(key).and_then(Value::as_bool).unwrap_or(default);
        let route = Route {
            label: prefix.to_string(),
            host,
            path,
            upstream: UpstreamRef::Fixed(Arc::new(upstream)),
            strip_prefix: flag("strip_prefix", dynamic.strip_prefix),
            block: dynamic.block.clone(),
            novnc: flag("novnc", dynamic.novnc),
            access: dynamic.access.clone(),
            fallback_redirect: None,
            drop_websocket_protocol: false,
            forward_cookies: flag("forward_cookies", dynamic.access.is_none()),
            response_rewrite: None,
            target_path: dynamic.prepend_path.then(|| target_path(&target)).flatten(),
            activity: Some(activity.clone()),
            data_captures: captures_from(prefix, &data),
            stats: crate::telemetry::metrics::RUNTIME_ROUTE_STATS.clone(),
            websocket: dynamic.websocket,
        };
        Ok(Entry {
            target,
            data,
            activity,
            route: Arc::new(route),
        })
    }

    /// Checks a route body without adding it (before it is written to the shared store).
    pub fn check(&self, raw_prefix: &str, body: Map<String, Value>) -> Result<(), RouteError> {
        self.build_entry(
            &normalize_prefix(raw_prefix),
            body,
            Arc::new(Activity::default()),
        )
        .map(|_| ())
    }

    pub fn add(&self, raw_prefix: &str, body: Map<String, Value>) -> Result<(), RouteError> {
        let prefix = normalize_prefix(raw_prefix);
        let mut entries = self.entries.lock().expect("routes lock");
        // A POST counts as activity (as in configurable-http-proxy); the clock itself is kept,
        // since open WebSockets on the route's previous version still move it.
        let activity = entries
            .get(&prefix)
            .map_or_else(|| Arc::new(Activity::at(now_ms())), |e| e.activity.clone());
        let entry = self.build_entry(&prefix, body, activity)?;
        entry.activity.touch();
        let previous = entries.insert(prefix.clone(), entry);
        if let Err(e) = self.persist(&entries) {
            // Keep memory and disk in agreement: undo, and tell the caller.
            match previous {
                Some(p) => entries.insert(prefix, p),
                None => entries.remove(&prefix),
            };
            return Err(RouteError::Storage(e));
        }
        self.publish_locked(&entries);
        Ok(())
    }

    pub fn remove(&self, raw_prefix: &str) -> Result<bool, RouteError> {
        let prefix = normalize_prefix(raw_prefix);
        let mut entries = self.entries.lock().expect("routes lock");
        let Some(old) = entries.remove(&prefix) else {
            return Ok(false);
        };
        if let Err(e) = self.persist(&entries) {
            entries.insert(prefix, old);
            return Err(RouteError::Storage(e));
        }
        self.publish_locked(&entries);
        Ok(true)
    }

    pub fn get(&self, raw_prefix: &str) -> Option<Value> {
        let prefix = normalize_prefix(raw_prefix);
        self.entries
            .lock()
            .expect("routes lock")
            .get(&prefix)
            .map(describe)
    }

    /// All routes, or those idle since before `inactive_since_ms`.
    pub fn list(&self, inactive_since_ms: Option<u64>) -> Map<String, Value> {
        let entries = self.entries.lock().expect("routes lock");
        entries
            .iter()
            .filter(|(_, e)| inactive_since_ms.is_none_or(|since| e.activity.last_ms() < since))
            .map(|(p, e)| (p.clone(), describe(e)))
            .collect()
    }

    /// Makes the local routes exactly `routes` (a resync from the shared store); activity
    /// clocks of routes that stay are kept.
    pub fn replace_all(&self, routes: Vec<(String, Map<String, Value>)>) {
        let mut entries = self.entries.lock().expect("routes lock");
        let mut next = BTreeMap::new();
        for (raw, data) in routes {
            let prefix = normalize_prefix(&raw);
            let activity = entries
                .get(&prefix)
                .map_or_else(|| Arc::new(Activity::at(now_ms())), |e| e.activity.clone());
            match self.build_entry(&prefix, data, activity) {
                Ok(e) => {
                    next.insert(prefix, e);
                }
                Err(e) => log::warn!("route store: skipping route {prefix}: {e:?}"),
            }
        }
        *entries = next;
        if let Err(e) = self.persist(&entries) {
            log::warn!("{e}");
        }
        self.publish_locked(&entries);
    }

    /// (prefix, last activity ms) of every route.
    pub fn activities(&self) -> Vec<(String, u64)> {
        self.entries
            .lock()
            .expect("routes lock")
            .iter()
            .map(|(p, e)| (p.clone(), e.activity.last_ms()))
            .collect()
    }

    /// Activity seen elsewhere: keep the later time.
    pub fn merge_activity(&self, prefix: &str, ms: u64) {
        if let Some(e) = self.entries.lock().expect("routes lock").get(prefix) {
            e.activity.merge(ms);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("routes lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn publish_locked(&self, entries: &BTreeMap<String, Entry>) {
        self.gateway
            .set_runtime_routes(entries.values().map(|e| e.route.clone()).collect());
    }

    fn persist(&self, entries: &BTreeMap<String, Entry>) -> Result<(), String> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let state: Map<String, Value> = entries
            .iter()
            .map(|(p, e)| (p.clone(), describe(e)))
            .collect();
        let text = serde_json::to_vec_pretty(&Value::Object(state)).map_err(|e| e.to_string())?;
        write_atomically(path, &text)
            .map_err(|e| format!("cannot write state file {}: {e}", path.display()))
    }

    /// Writes the state file with current activity times (called periodically and at exit).
    pub fn flush(&self) -> Result<(), String> {
        self.persist(&self.entries.lock().expect("routes lock"))
    }
}

/// The path of a target URL (`http://host:port/base/` -> `/base/`), when it has one.
fn target_path(target: &str) -> Option<String> {
    let rest = target.split_once("://").map_or(target, |(_, r)| r);
    let path = rest.find('/').map(|i| &rest[i..])?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    (path != "/").then(|| path.to_string())
}

/// Captures for runtime routes: `prefix` and every string field of the route's data, so a
/// `dynamic.auth.url` can say `.../api/auth/desktop/{name}` for routes posted with `"name"`.
fn captures_from(prefix: &str, data: &Map<String, Value>) -> Captures {
    let mut c = Captures::default();
    c.push("prefix", prefix.trim_start_matches('/'));
    for (k, v) in data {
        if let Value::String(s) = v {
            c.push(k, s);
        }
    }
    c
}

fn describe(e: &Entry) -> Value {
    let mut m = e.data.clone();
    m.insert("target".into(), Value::String(e.target.clone()));
    m.insert(
        "last_activity".into(),
        Value::String(format_iso8601(e.activity.last_ms())),
    );
    Value::Object(m)
}

fn load_state(path: &Path) -> Result<Vec<(String, Map<String, Value>)>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    match serde_json::from_slice::<Value>(&text).map_err(|e| format!("not valid JSON: {e}"))? {
        Value::Object(m) => Ok(m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Object(d) => Some((normalize_prefix(&k), d)),
                _ => None,
            })
            .collect()),
        _ => Err("expected a JSON object of prefix -> route".into()),
    }
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is synced.
    std::fs::File::open(dir)?.sync_all()
}

pub fn format_iso8601(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// ISO 8601 with any offset (`2026-11-24T10:00:00Z`, `...+01:00`, `...000000`); naive = UTC.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return u64::try_from(t.timestamp_millis()).ok();
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return u64::try_from(t.and_utc().timestamp_millis()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prefixes_and_hosts() {
        assert_eq!(normalize_prefix("/user/alice/"), "/user/alice");
        assert_eq!(normalize_prefix("user%2Falice"), "/user/alice");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(
            split_host("/desktop-alice.hub.example.org/x", false),
            (Some("desktop-alice.hub.example.org".into()), "/x".into())
        );
        assert_eq!(
            split_host("/desktop-alice.hub.example.org", false),
            (Some("desktop-alice.hub.example.org".into()), "/".into())
        );
        assert_eq!(
            split_host("/user/alice", false),
            (None, "/user/alice".into())
        );
        assert_eq!(
            split_host("/localhost/user/alice", true),
            (Some("localhost".into()), "/user/alice".into())
        );
        assert_eq!(split_host("/", true), (None, "/".into()));
    }
    #[test]
    fn iso8601_round_trip() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_iso8601(&format_iso8601(ms)), Some(ms));
        assert_eq!(
            parse_iso8601("2026-11-24T10:00:00+01:00"),
            parse_iso8601("2026-11-24T09:00:00Z")
        );
        assert!(parse_iso8601("yesterday").is_none());
    }
}

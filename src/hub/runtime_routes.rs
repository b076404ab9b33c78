//! Routes the hub registers at run time, through the configurable-http-proxy API (the one
//! JupyterHub speaks): `prefix -> {"target": URL, ...extra data}`, each with a `last_activity`
//! clock moved by proxied requests and by bytes on upgraded WebSockets.
//!
//! A change costs O(log n) in the number of routes: the entry map and the gateway's runtime
//! tier are persistent maps (`rpds`), changed one route at a time. The state file is written
//! off the request path by a flusher thread (`StateFile`): at once after the first change,
//! then at most once per `STATE_FILE_INTERVAL` while changes keep coming, each time atomically
//! (write, fsync, rename, fsync dir), and once more at exit if anything is pending; so a route
//! acknowledged less than about a second before a crash may be missing after the restart
//! (docs/scaling.md, "The state file").

use crate::edge::gateway::Gateway;
use crate::routing::pattern::Captures;
use crate::routing::runtime::NotLiteral;
use crate::routing::{AccessGate, HostPattern, PathPattern, Route, UpstreamRef};
use crate::telemetry::activity::{now_ms, Activity};
use crate::upstream::settings::UpstreamTls;
use crate::upstream::Upstream;
use http::HeaderValue;
use rpds::RedBlackTreeMapSync;
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// The least time between two writes of the state file: a burst of changes costs one O(n)
/// write per interval, not one per change.
const STATE_FILE_INTERVAL: Duration = Duration::from_secs(1);

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

#[derive(Clone)]
struct Entry {
    target: String,
    data: Map<String, Value>,
    activity: Arc<Activity>,
    route: Arc<Route>,
}

/// By normalized prefix. Persistent: cloning it (for the state file) is O(1).
type Entries = RedBlackTreeMapSync<String, Entry>;

pub struct RuntimeRoutes {
    entries: Mutex<Entries>,
    gateway: Arc<Gateway>,
    dynamic: Mutex<DynamicSettings>,
    state_file: Option<StateFile>,
}

/// A route's activity to push to the shared store.
pub struct ActivityChange {
    pub prefix: String,
    pub ms: u64,
    clock: Arc<Activity>,
}

impl ActivityChange {
    /// The store has it now.
    pub fn stored(&self) {
        self.clock.stored(self.ms);
    }
}

/// The state file and what its flusher thread waits on.
struct StateFile {
    path: PathBuf,
    /// Changes not yet written.
    dirty: Mutex<bool>,
    changed: Condvar,
    /// Held while writing, so the flusher and `flush()` at exit never write at once.
    writing: Mutex<()>,
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
            entries: Mutex::new(Entries::new_sync()),
            gateway,
            dynamic: Mutex::new(dynamic),
            state_file: state_file.map(|path| StateFile {
                path,
                dirty: Mutex::new(false),
                changed: Condvar::new(),
                writing: Mutex::new(()),
            }),
        });
        if let Some(state) = &rr.state_file {
            let path = &state.path;
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
                                entries.insert_mut(prefix, e);
                            }
                            Err(e) => log::warn!(
                                "state file {}: skipping route {prefix}: {e:?}",
                                path.display()
                            ),
                        }
                    }
                    log::info!(
                        "loaded {} runtime routes from {}",
                        entries.size(),
                        path.display()
                    );
                    rr.publish_all(&entries);
                }
                Err(e) => log::warn!(
                    "state file {}: {e}; starting with no runtime routes",
                    path.display()
                ),
            }
            let flusher = Arc::downgrade(&rr);
            if let Err(e) = std::thread::Builder::new()
                .name("state file".into())
                .spawn(move || write_state_file_when_changed(flusher))
            {
                log::error!(
                    "state file {}: cannot start its writer ({e}); routes are written at exit only",
                    path.display()
                );
            }
        }
        rr
    }

    /// New settings for runtime routes after a reload: rebuild every route with them.
    pub fn set_dynamic(&self, dynamic: DynamicSettings) {
        *self.dynamic.lock().expect("dynamic lock") = dynamic;
        let mut entries = self.entries.lock().expect("routes lock");
        let mut next = Entries::new_sync();
        for (prefix, e) in entries.iter() {
            let mut data = e.data.clone();
            data.insert("target".into(), Value::String(e.target.clone()));
            let rebuilt = self.build_entry(prefix, data, e.activity.clone());
            next.insert_mut(prefix.clone(), rebuilt.unwrap_or_else(|_| e.clone()));
        }
        *entries = next;
        self.publish_all(&entries);
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
        let route = entry.route.clone();
        entries.insert_mut(prefix, entry);
        self.published(self.gateway.set_runtime_route(route));
        self.mark_changed();
        Ok(())
    }

    pub fn remove(&self, raw_prefix: &str) -> Result<bool, RouteError> {
        let prefix = normalize_prefix(raw_prefix);
        let mut entries = self.entries.lock().expect("routes lock");
        let Some(old) = entries.get(&prefix).map(|e| e.route.clone()) else {
            return Ok(false);
        };
        entries.remove_mut(&prefix);
        self.published(self.gateway.remove_runtime_route(&old));
        self.mark_changed();
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
        let mut next = Entries::new_sync();
        for (raw, data) in routes {
            let prefix = normalize_prefix(&raw);
            let activity = entries
                .get(&prefix)
                .map_or_else(|| Arc::new(Activity::at(now_ms())), |e| e.activity.clone());
            match self.build_entry(&prefix, data, activity) {
                Ok(e) => {
                    next.insert_mut(prefix, e);
                }
                Err(e) => log::warn!("route store: skipping route {prefix}: {e:?}"),
            }
        }
        *entries = next;
        self.publish_all(&entries);
        self.mark_changed();
    }

    /// The routes whose activity is later than the shared store is known to hold (every
    /// route with `everything`: the store may be a promoted replica). One pass over a
    /// snapshot, two atomic loads a route; only the routes returned are copied.
    pub fn activity_changes(&self, everything: bool) -> Vec<ActivityChange> {
        self.current()
            .iter()
            .filter_map(|(prefix, e)| {
                let ms = if everything {
                    e.activity.last_ms()
                } else {
                    e.activity.unstored()?
                };
                Some(ActivityChange {
                    prefix: prefix.clone(),
                    ms,
                    clock: e.activity.clone(),
                })
            })
            .collect()
    }

    /// Activity read from the shared store, `(prefix, ms)`: keep the later time, and remember
    /// that the store has it (it need not be pushed back).
    pub fn merge_activities(&self, seen: impl IntoIterator<Item = (String, u64)>) {
        let entries = self.current();
        for (prefix, ms) in seen {
            if let Some(e) = entries.get(&prefix) {
                e.activity.merge(ms);
                e.activity.stored(ms);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("routes lock").size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The routes as they are now; O(1), and the lock is not held while it is read.
    fn current(&self) -> Entries {
        self.entries.lock().expect("routes lock").clone()
    }

    /// Gives the gateway every route (after a load, a resync, new settings): O(n).
    fn publish_all(&self, entries: &Entries) {
        let routes = entries.values().map(|e| e.route.clone()).collect();
        self.published(self.gateway.set_runtime_routes(routes));
    }

    fn published(&self, result: Result<(), NotLiteral>) {
        // Routes built here are literal by construction (`PathPattern::literal`, exact hosts).
        if let Err(e) = result {
            log::error!("runtime routes: {e}");
        }
    }

    /// Wakes the state file's writer.
    fn mark_changed(&self) {
        if let Some(state) = &self.state_file {
            *state.dirty.lock().expect("state file lock") = true;
            state.changed.notify_one();
        }
    }

    /// Writes the state file now if a change has not been written yet (at exit; the writer
    /// thread calls it too). Only pending changes are written: an old process draining after
    /// a binary upgrade must not overwrite the state its successor wrote since.
    pub fn flush(&self) -> Result<(), StateFileError> {
        let Some(state) = &self.state_file else {
            return Ok(());
        };
        let _writing = state.writing.lock().expect("state file write lock");
        if !std::mem::take(&mut *state.dirty.lock().expect("state file lock")) {
            return Ok(());
        }
        let written = write_state(&state.path, &self.current());
        if written.is_err() {
            // Try again on the next round rather than lose the change.
            *state.dirty.lock().expect("state file lock") = true;
        }
        written
    }
}

/// The state file's writer: waits for a change, writes, then lets changes gather for
/// `STATE_FILE_INTERVAL`; ends with the routes it writes for.
fn write_state_file_when_changed(routes: Weak<RuntimeRoutes>) {
    loop {
        let Some(rr) = routes.upgrade() else { return };
        let Some(state) = &rr.state_file else { return };
        let dirty = state.dirty.lock().expect("state file lock");
        // Wakes up now and then without a change to notice that the routes are gone.
        let (dirty, _) = state
            .changed
            .wait_timeout_while(dirty, Duration::from_secs(10), |dirty| !*dirty)
            .expect("state file lock");
        let pending = *dirty;
        drop(dirty);
        if !pending {
            continue;
        }
        if let Err(e) = rr.flush() {
            log::error!("{e}; retrying in {STATE_FILE_INTERVAL:?}");
        }
        drop(rr);
        std::thread::sleep(STATE_FILE_INTERVAL);
    }
}

/// Why the state file could not be written or read (writing is retried; a file that cannot
/// be read leaves the edge starting with no runtime routes).
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot write state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Read(#[source] std::io::Error),
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("expected a JSON object of prefix -> route")]
    NotAnObject,
}

/// The whole state file: every route as the API describes it, `last_activity` included.
fn write_state(path: &Path, entries: &Entries) -> Result<(), StateFileError> {
    let state: Map<String, Value> = entries
        .iter()
        .map(|(p, e)| (p.clone(), describe(e)))
        .collect();
    // A map of strings and JSON values always serializes.
    let text = serde_json::to_vec_pretty(&Value::Object(state)).expect("JSON values serialize");
    write_atomically(path, &text).map_err(|source| StateFileError::Write {
        path: path.to_path_buf(),
        source,
    })
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

fn load_state(path: &Path) -> Result<Vec<(String, Map<String, Value>)>, StateFileError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StateFileError::Read(e)),
    };
    match serde_json::from_slice::<Value>(&text).map_err(StateFileError::Json)? {
        Value::Object(m) => Ok(m
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::Object(d) => Some((normalize_prefix(&k), d)),
                _ => None,
            })
            .collect()),
        _ => Err(StateFileError::NotAnObject),
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

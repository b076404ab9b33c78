//! The routes the hub registers at run time, as their own tier of the routing snapshot, changed
//! one route at a time.
//!
//! Runtime routes are always literal (`/user/alice`, `alice.hub.example.org/`: the admin API
//! has no captures), so a tier is two levels of maps: host (or any host), then the path's
//! literal key, the same key [`super::RouteTable`]'s literal lookup walks. The maps are
//! persistent hash tries (`rpds`): a change makes a new tier that shares all but O(log n)
//! nodes with the old one, so adding the 10,000th route costs what adding the 10th does, and
//! requests in flight keep the tier they started with. A hand-written index would have to
//! either clone a whole bucket per change (JupyterHub puts every route under `/user/`: one
//! bucket) or reimplement the trie; rpds is maintained, small (two dependencies) and `Sync`.

use super::{HostPattern, Route, RouteHasher};
use rpds::HashTrieMapSync;
use std::sync::Arc;

/// Every runtime route, by host and path. Cloning is O(1).
#[derive(Clone, Default)]
pub struct RuntimeTable {
    any_host: Paths,
    hosts: HashTrieMapSync<Box<str>, Paths, RouteHasher>,
    len: usize,
}

/// One host's runtime routes by literal path key (`/user/alice`; `` for `/`).
#[derive(Clone, Default)]
pub(super) struct Paths(HashTrieMapSync<Box<str>, Slot, RouteHasher>);

/// The routes registered for one host and path. Almost always one; several when different
/// prefixes name the same place (`/Alice.hub.test/x` and `/alice.hub.test/x`, `/a//b` and
/// `/a/b`). The first by label (the prefix) serves, as when every runtime route went into one
/// table in prefix order; the others serve once it is removed.
#[derive(Clone)]
struct Slot {
    serving: Arc<Route>,
    others: Vec<Arc<Route>>,
}

/// A route that cannot be a runtime route: its host is a pattern or its path has captures.
#[derive(Debug, thiserror::Error)]
#[error("runtime route `{0}` is not literal (a host pattern or a path with captures)")]
pub struct NotLiteral(pub String);

/// Where a runtime route goes in the tier: its exact host (or none) and its path's key.
fn key_of(route: &Route) -> Result<(Option<&str>, String), NotLiteral> {
    let not_literal = || NotLiteral(route.label.clone());
    let host = match &route.host {
        None => None,
        Some(HostPattern::Exact(h)) => Some(h.as_str()),
        Some(_) => return Err(not_literal()),
    };
    let path = route.path.literal_key().ok_or_else(not_literal)?;
    Ok((host, path))
}

impl RuntimeTable {
    /// A tier of `routes`; among routes for the same host and path, the first by label serves.
    pub fn build(routes: impl IntoIterator<Item = Arc<Route>>) -> Result<RuntimeTable, NotLiteral> {
        let mut t = RuntimeTable::default();
        for r in routes {
            t.insert(r)?;
        }
        Ok(t)
    }

    /// Adds `route`, replacing the one with the same label (the same prefix).
    pub fn insert(&mut self, route: Arc<Route>) -> Result<(), NotLiteral> {
        let (host, path) = key_of(&route)?;
        let host: Option<Box<str>> = host.map(Into::into);
        let added = match host {
            None => self.any_host.insert(path, route),
            Some(h) => {
                let mut paths = self.hosts.get(&h).cloned().unwrap_or_default();
                let added = paths.insert(path, route);
                self.hosts.insert_mut(h, paths);
                added
            }
        };
        self.len += usize::from(added);
        Ok(())
    }

    /// Removes the route labelled `label` registered for `route`'s host and path; false if
    /// there was none.
    pub fn remove(&mut self, route: &Route) -> Result<bool, NotLiteral> {
        let (host, path) = key_of(route)?;
        let removed = match host {
            None => self.any_host.remove(&path, &route.label),
            Some(h) => {
                let Some(mut paths) = self.hosts.get(h).cloned() else {
                    return Ok(false);
                };
                let removed = paths.remove(&path, &route.label);
                if paths.0.is_empty() {
                    self.hosts.remove_mut(h);
                } else if removed {
                    self.hosts.insert_mut(h.into(), paths);
                }
                removed
            }
        };
        self.len -= usize::from(removed);
        Ok(removed)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The routes for exactly `host`, if any.
    pub(super) fn host(&self, host: &str) -> Option<&Paths> {
        if self.hosts.is_empty() {
            return None;
        }
        self.hosts.get(host)
    }

    /// The routes for any host, if any.
    pub(super) fn any_host(&self) -> Option<&Paths> {
        (!self.any_host.0.is_empty()).then_some(&self.any_host)
    }
}

impl Paths {
    /// The route serving literal path key `key`.
    pub(super) fn get(&self, key: &str) -> Option<&Arc<Route>> {
        self.0.get(key).map(|s| &s.serving)
    }

    /// True if `route` is new here (not a replacement of its label).
    fn insert(&mut self, key: String, route: Arc<Route>) -> bool {
        let mut all: Vec<Arc<Route>> = self
            .0
            .get(key.as_str())
            .map(|s| s.routes().cloned().collect())
            .unwrap_or_default();
        let replaced = all.iter().position(|r| r.label == route.label);
        match replaced {
            Some(i) => all[i] = route,
            None => all.push(route),
        }
        if let Some(slot) = Slot::of(all) {
            self.0.insert_mut(key.into_boxed_str(), slot);
        }
        replaced.is_none()
    }

    fn remove(&mut self, key: &str, label: &str) -> bool {
        let Some(old) = self.0.get(key) else {
            return false;
        };
        let before = old.others.len() + 1;
        let rest: Vec<Arc<Route>> = old.routes().filter(|r| r.label != label).cloned().collect();
        if rest.len() == before {
            return false;
        }
        match Slot::of(rest) {
            Some(slot) => self.0.insert_mut(key.into(), slot),
            None => {
                self.0.remove_mut(key);
            }
        }
        true
    }
}

impl Slot {
    /// The slot of `routes`, the first by label serving; None when there are none.
    fn of(mut routes: Vec<Arc<Route>>) -> Option<Slot> {
        routes.sort_by(|a, b| a.label.cmp(&b.label));
        let mut routes = routes.into_iter();
        let serving = routes.next()?;
        Some(Slot {
            serving,
            others: routes.collect(),
        })
    }

    fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        std::iter::once(&self.serving).chain(&self.others)
    }
}

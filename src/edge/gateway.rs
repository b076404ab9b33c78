//! The state every listener shares: the current routing snapshot and what swaps it.
//!
//! Two sources feed the snapshot: the YAML config (replaced on reload: the configured table is
//! rebuilt) and the runtime routes (changed by the admin API, one route at a time: only the
//! runtime tier changes, in O(log n), and the configured table is shared). Either change makes
//! a new snapshot off to the side and swaps it in atomically; requests in flight keep the
//! snapshot they started with.

use crate::edge::error_pages::ErrorPages;
use crate::edge::forwarding::ProxyHeaders;
use crate::routing::runtime::NotLiteral;
use crate::routing::{Route, RouteTable, Routes, RuntimeTable};
use crate::tls::CertResolver;
use crate::upstream::settings::Timeouts;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The configured half of a snapshot (from YAML, replaced on reload).
#[derive(Clone)]
pub struct EdgeSettings {
    pub routes: Vec<Arc<Route>>,
    pub upstreams: Arc<HashMap<String, Arc<Upstream>>>,
    pub timeouts: Timeouts,
    pub max_header_bytes: usize,
    pub max_header_field_bytes: usize,
    pub proxy_headers: Arc<ProxyHeaders>,
    pub error_pages: Arc<ErrorPages>,
}

/// Everything a request needs to be routed, frozen at one generation: the routes (the
/// configured table and the runtime tier) and the settings they were built with (reachable
/// through `Deref`).
pub struct Snapshot {
    pub routes: Routes,
    pub generation: u64,
    settings: Arc<EdgeSettings>,
}

impl Snapshot {
    /// The routes from the config (without runtime routes), in config order.
    pub fn configured_routes(&self) -> &[Arc<Route>] {
        &self.settings.routes
    }
}

impl std::ops::Deref for Snapshot {
    type Target = EdgeSettings;
    fn deref(&self) -> &EdgeSettings {
        &self.settings
    }
}

pub struct Gateway {
    current: ArcSwap<Snapshot>,
    /// Held by whoever makes the next snapshot, so no change is lost between load and store.
    change_lock: Mutex<()>,
    /// Each TLS listener's certificates, by listening address.
    pub cert_resolvers: Vec<(String, Arc<CertResolver>)>,
}

impl Gateway {
    pub fn new(
        settings: EdgeSettings,
        cert_resolvers: Vec<(String, Arc<CertResolver>)>,
    ) -> Gateway {
        let configured = Arc::new(RouteTable::build(settings.routes.iter().cloned()));
        Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                routes: Routes {
                    configured,
                    runtime: RuntimeTable::default(),
                },
                generation: 1,
                settings: Arc::new(settings),
            }),
            change_lock: Mutex::new(()),
            cert_resolvers,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Adds a runtime route, or replaces the one with its label (prefix): O(log n).
    pub fn set_runtime_route(&self, route: Arc<Route>) -> Result<(), NotLiteral> {
        self.change(|routes, _| routes.runtime.insert(route))
    }

    /// Removes the runtime route labelled as `route` at its host and path: O(log n).
    pub fn remove_runtime_route(&self, route: &Route) -> Result<(), NotLiteral> {
        self.change(|routes, _| routes.runtime.remove(route).map(|_| ()))
    }

    /// Replaces every runtime route (start-up from the state file, a resync from the route
    /// store, new `dynamic:` settings): O(n), done rarely.
    pub fn set_runtime_routes(&self, routes: Vec<Arc<Route>>) -> Result<(), NotLiteral> {
        let runtime = RuntimeTable::build(routes)?;
        self.change(|routes, _| {
            routes.runtime = runtime;
            Ok(())
        })
    }

    /// A reloaded config's routes, upstreams and settings (certificates are swapped by the
    /// caller through `cert_resolvers`): the configured table is rebuilt, the runtime tier kept.
    pub fn apply(&self, settings: EdgeSettings) {
        let configured = Arc::new(RouteTable::build(settings.routes.iter().cloned()));
        let settings = Arc::new(settings);
        let applied: Result<(), std::convert::Infallible> = self.change(|routes, current| {
            routes.configured = configured;
            *current = settings;
            Ok(())
        });
        let Ok(()) = applied;
    }

    /// Makes the next snapshot from the current one by `edit` (of its routes and settings) and
    /// swaps it in; nothing is swapped when `edit` fails.
    fn change<E>(
        &self,
        edit: impl FnOnce(&mut Routes, &mut Arc<EdgeSettings>) -> Result<(), E>,
    ) -> Result<(), E> {
        let _guard = self.change_lock.lock().expect("change lock");
        let now = self.current.load();
        let mut routes = now.routes.clone();
        let mut settings = now.settings.clone();
        edit(&mut routes, &mut settings)?;
        self.current.store(Arc::new(Snapshot {
            routes,
            generation: now.generation + 1,
            settings,
        }));
        Ok(())
    }
}

//! The state every listener shares: the current routing snapshot and what swaps it.
//!
//! Two sources feed the snapshot: the YAML config (replaced on reload) and the runtime routes
//! (changed by the admin API). Either change rebuilds the table off to the side and swaps it
//! in atomically; requests in flight keep the snapshot they started with.

use crate::edge::error_pages::ErrorPages;
use crate::edge::forwarding::ProxyHeaders;
use crate::routing::{Route, RouteTable};
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

/// Everything a request needs to be routed, frozen at one generation: the route table (YAML
/// routes plus runtime routes) and the settings it was built with (reachable through `Deref`).
pub struct Snapshot {
    pub routes: RouteTable,
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
    settings: ArcSwap<EdgeSettings>,
    runtime_routes: ArcSwap<Vec<Arc<Route>>>,
    rebuild_lock: Mutex<()>,
    /// Each TLS listener's certificates, by listening address.
    pub cert_resolvers: Vec<(String, Arc<CertResolver>)>,
}

impl Gateway {
    pub fn new(
        settings: EdgeSettings,
        cert_resolvers: Vec<(String, Arc<CertResolver>)>,
    ) -> Gateway {
        let settings = Arc::new(settings);
        let g = Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                routes: RouteTable::default(),
                generation: 0,
                settings: settings.clone(),
            }),
            settings: ArcSwap::new(settings),
            runtime_routes: ArcSwap::from_pointee(Vec::new()),
            rebuild_lock: Mutex::new(()),
            cert_resolvers,
        };
        g.rebuild();
        g
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    pub fn set_runtime_routes(&self, routes: Vec<Arc<Route>>) {
        let _guard = self.rebuild_lock.lock().expect("rebuild lock");
        self.runtime_routes.store(Arc::new(routes));
        self.rebuild();
    }

    /// A reloaded config's routes, upstreams and settings (certificates are swapped by the
    /// caller through `cert_resolvers`).
    pub fn apply(&self, settings: EdgeSettings) {
        let _guard = self.rebuild_lock.lock().expect("rebuild lock");
        self.settings.store(Arc::new(settings));
        self.rebuild();
    }

    fn rebuild(&self) {
        let settings = self.settings.load_full();
        let runtime = self.runtime_routes.load();
        // Runtime routes first: at equal host and path the hub's registration wins, as in CHP.
        let routes = runtime
            .iter()
            .cloned()
            .chain(settings.routes.iter().cloned());
        // Callers hold `rebuild_lock` (or, in `new`, the only reference): generations never repeat.
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Snapshot {
            routes: RouteTable::build(routes),
            generation,
            settings,
        }));
    }
}

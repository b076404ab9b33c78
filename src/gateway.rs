//! The state every listener shares: the current routing snapshot and what swaps it.
//!
//! Two sources feed the snapshot: the YAML config (replaced on reload) and the runtime routes
//! (changed by the admin API). Either change rebuilds the table off to the side and swaps it
//! in atomically; requests in flight keep the snapshot they started with.

use crate::config::{Config, Timeouts};
use crate::error_pages::ErrorPages;
use crate::forwarding::ProxyHeaders;
use crate::routes::{Route, RouteTable};
use crate::tls::CertResolver;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Everything a request needs to be routed, frozen at one generation.
pub struct Snapshot {
    pub routes: RouteTable,
    pub max_header_bytes: usize,
    pub proxy_headers: Arc<ProxyHeaders>,
    pub error_pages: Arc<ErrorPages>,
    pub upstreams: Arc<HashMap<String, Arc<Upstream>>>,
    pub timeouts: Timeouts,
    pub generation: u64,
}

/// The YAML half of a snapshot.
struct StaticPart {
    max_header_bytes: usize,
    proxy_headers: Arc<ProxyHeaders>,
    error_pages: Arc<ErrorPages>,
    routes: Vec<Arc<Route>>,
    upstreams: Arc<HashMap<String, Arc<Upstream>>>,
    timeouts: Timeouts,
}

pub struct Gateway {
    current: ArcSwap<Snapshot>,
    static_part: ArcSwap<StaticPart>,
    runtime_routes: ArcSwap<Vec<Arc<Route>>>,
    rebuild_lock: Mutex<()>,
    /// Each TLS listener's certificates, by listening address.
    pub cert_resolvers: Vec<(String, Arc<CertResolver>)>,
}

impl Gateway {
    pub fn new(config: &Config, cert_resolvers: Vec<(String, Arc<CertResolver>)>) -> Gateway {
        let g = Gateway {
            current: ArcSwap::from_pointee(Snapshot {
                routes: RouteTable::default(),
                max_header_bytes: config.max_header_bytes,
                proxy_headers: config.proxy_headers.clone(),
                error_pages: config.error_pages.clone(),
                upstreams: Arc::default(),
                timeouts: config.timeouts,
                generation: 0,
            }),
            static_part: ArcSwap::from_pointee(StaticPart {
                max_header_bytes: config.max_header_bytes,
                proxy_headers: config.proxy_headers.clone(),
                error_pages: config.error_pages.clone(),
                routes: config.routes.clone(),
                upstreams: config.upstreams.clone(),
                timeouts: config.timeouts,
            }),
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

    /// A reloaded config's routes, upstreams and timeouts (certificates are swapped by the
    /// caller through `cert_resolvers`).
    pub fn apply_config(&self, config: &Config) {
        let _guard = self.rebuild_lock.lock().expect("rebuild lock");
        self.static_part.store(Arc::new(StaticPart {
            max_header_bytes: config.max_header_bytes,
            proxy_headers: config.proxy_headers.clone(),
            error_pages: config.error_pages.clone(),
            routes: config.routes.clone(),
            upstreams: config.upstreams.clone(),
            timeouts: config.timeouts,
        }));
        self.rebuild();
    }

    /// The YAML routes' labels and counters, for `/metrics`.
    pub fn route_stats(&self) -> Vec<(String, Arc<crate::metrics::RouteStats>)> {
        self.static_part
            .load()
            .routes
            .iter()
            .map(|r| (r.label.clone(), r.stats.clone()))
            .collect()
    }

    fn rebuild(&self) {
        let statics = self.static_part.load();
        let runtime = self.runtime_routes.load();
        // Runtime routes first: at equal host and path the hub's registration wins, as in CHP.
        let routes = runtime
            .iter()
            .cloned()
            .chain(statics.routes.iter().cloned());
        // Callers hold `rebuild_lock` (or, in `new`, the only reference): generations never repeat.
        let generation = self.current.load().generation + 1;
        self.current.store(Arc::new(Snapshot {
            routes: RouteTable::build(routes),
            max_header_bytes: statics.max_header_bytes,
            proxy_headers: statics.proxy_headers.clone(),
            error_pages: statics.error_pages.clone(),
            upstreams: statics.upstreams.clone(),
            timeouts: statics.timeouts,
            generation,
        }));
    }
}

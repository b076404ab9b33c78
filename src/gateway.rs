//! The state every listener shares: the current routing snapshot and what swaps it.

use crate::config::{Config, Timeouts};
use crate::routes::{Route, RouteTable};
use crate::tls::CertResolver;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// Everything a request needs to be routed, frozen at one config generation. A request keeps
/// the snapshot it started with, so a reload never changes a request (or a WebSocket) mid-way.
pub struct Snapshot {
    pub routes: RouteTable,
    pub upstreams: Arc<HashMap<String, Arc<Upstream>>>,
    pub timeouts: Timeouts,
    pub generation: u64,
}

pub struct Gateway {
    current: ArcSwap<Snapshot>,
    /// YAML routes of the current config; runtime routes are merged in on each rebuild.
    static_routes: ArcSwap<Vec<Arc<Route>>>,
    pub cert_resolvers: Vec<Arc<CertResolver>>,
}

impl Gateway {
    pub fn new(config: &Config, cert_resolvers: Vec<Arc<CertResolver>>) -> Gateway {
        let snapshot = Snapshot {
            routes: RouteTable::build(config.routes.iter().cloned()),
            upstreams: config.upstreams.clone(),
            timeouts: config.timeouts,
            generation: 1,
        };
        Gateway { current: ArcSwap::from_pointee(snapshot), static_routes: ArcSwap::from_pointee(config.routes.clone()), cert_resolvers }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Rebuilds the table from the static routes plus `runtime` routes and swaps it in.
    pub fn rebuild(&self, runtime: impl IntoIterator<Item = Arc<Route>>) {
        let prev = self.current.load();
        let statics = self.static_routes.load();
        // Runtime routes first: at equal host and path the hub's registration wins, as in CHP.
        let routes: Vec<Arc<Route>> = runtime.into_iter().chain(statics.iter().cloned()).collect();
        self.current.store(Arc::new(Snapshot {
            routes: RouteTable::build(routes),
            upstreams: prev.upstreams.clone(),
            timeouts: prev.timeouts,
            generation: prev.generation + 1,
        }));
    }
}

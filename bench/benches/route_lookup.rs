//! Route lookup cost with 10 vs 10,000 runtime routes (issue: lookups stay fast with many
//! users). Literal prefixes are hash lookups along the path's `/` boundaries, so the cost
//! should not grow with the number of routes. Measured two ways: every route in one
//! `RouteTable` (how the edge held them until the runtime tier), and the edge's `Routes`
//! (configured table + runtime tier, a persistent hash trie).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use deskgate::routing::{
    HostPattern, PathPattern, Route, RouteMatch, RouteTable, Routes, RuntimeTable, UpstreamRef,
};
use deskgate::upstream::Upstream;
use std::sync::Arc;

fn route(host: Option<&str>, path: PathPattern) -> Arc<Route> {
    let host = host.map(|h| HostPattern::parse(h).unwrap());
    Arc::new(Route {
        strip_prefix: true,
        ..Route::new(
            host,
            path,
            UpstreamRef::Fixed(Arc::new(Upstream::plain("u", "127.0.0.1:1"))),
        )
    })
}

/// The hub's YAML routes.
fn configured() -> Vec<Arc<Route>> {
    vec![
        route(Some("desktop-{name}.hub.example.org"), PathPattern::root()),
        route(None, PathPattern::parse("/desktop/{name}/").unwrap()),
        route(None, PathPattern::root()),
    ]
}

/// `n` runtime routes `/user/u<i>` (as JupyterHub registers them).
fn runtime(n: usize) -> impl Iterator<Item = Arc<Route>> {
    (0..n).map(|i| route(None, PathPattern::literal(&format!("/user/u{i}"))))
}

/// Either way of holding the routes.
trait Lookup {
    fn find(&self, host: &str, path: &str) -> Option<RouteMatch>;
}

impl Lookup for RouteTable {
    fn find(&self, host: &str, path: &str) -> Option<RouteMatch> {
        self.lookup(host, path)
    }
}

impl Lookup for Routes {
    fn find(&self, host: &str, path: &str) -> Option<RouteMatch> {
        self.lookup(host, path)
    }
}

fn lookups(c: &mut Criterion) {
    for n in [10usize, 10_000] {
        let one_table = RouteTable::build(runtime(n).chain(configured()));
        lookups_in(c, "route_lookup", n, &one_table);
        let tiers = Routes {
            configured: Arc::new(RouteTable::build(configured())),
            runtime: RuntimeTable::build(runtime(n)).unwrap(),
        };
        lookups_in(c, "route_lookup_tiers", n, &tiers);
    }
}

fn lookups_in(c: &mut Criterion, group: &str, n: usize, t: &impl Lookup) {
    let mut g = c.benchmark_group(group);
    {
        let runtime_path = format!("/user/u{}/lab/tree/notebook.ipynb", n / 2);
        g.bench_with_input(BenchmarkId::new("runtime_route", n), t, |b, t| {
            b.iter(|| {
                t.find(black_box("hub.example.org"), black_box(&runtime_path))
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("desktop_path", n), t, |b, t| {
            b.iter(|| {
                t.find(
                    black_box("hub.example.org"),
                    black_box("/desktop/alice/websockify"),
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("desktop_host", n), t, |b, t| {
            b.iter(|| {
                t.find(
                    black_box("desktop-alice.hub.example.org"),
                    black_box("/websockify"),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = lookups
}
criterion_main!(benches);

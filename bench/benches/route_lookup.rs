//! Route lookup cost with 10 vs 10,000 runtime routes (issue: lookups stay fast with many
//! users). Literal prefixes are hash lookups along the path's `/` boundaries, so the cost
//! should not grow with the number of routes.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use deskgate::routing::{HostPattern, PathPattern, Route, RouteTable, UpstreamRef};
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

/// The hub's YAML routes plus `n` runtime routes `/user/u<i>` (as JupyterHub registers them).
fn table(n: usize) -> RouteTable {
    let mut routes = vec![
        route(Some("desktop-{name}.hub.example.org"), PathPattern::root()),
        route(None, PathPattern::parse("/desktop/{name}/").unwrap()),
        route(None, PathPattern::root()),
    ];
    routes.extend((0..n).map(|i| route(None, PathPattern::literal(&format!("/user/u{i}")))));
    RouteTable::build(routes)
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("route_lookup");
    for n in [10usize, 10_000] {
        let t = table(n);
        let runtime_path = format!("/user/u{}/lab/tree/notebook.ipynb", n / 2);
        g.bench_with_input(BenchmarkId::new("runtime_route", n), &t, |b, t| {
            b.iter(|| {
                t.lookup(black_box("hub.example.org"), black_box(&runtime_path))
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("desktop_path", n), &t, |b, t| {
            b.iter(|| {
                t.lookup(
                    black_box("hub.example.org"),
                    black_box("/desktop/alice/websockify"),
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("desktop_host", n), &t, |b, t| {
            b.iter(|| {
                t.lookup(
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

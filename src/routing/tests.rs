use super::*;
use crate::upstream::Upstream;

fn route(host: Option<&str>, path: &str, name: &str) -> Arc<Route> {
    let host = host.map(|h| HostPattern::parse(h).unwrap());
    let upstream = UpstreamRef::Fixed(Arc::new(Upstream::plain(name, "127.0.0.1:1")));
    Arc::new(Route::new(
        host,
        PathPattern::parse(path).unwrap(),
        upstream,
    ))
}

fn upstream_name(m: &RouteMatch) -> &str {
    match &m.route.upstream {
        UpstreamRef::Fixed(u) => &u.name,
        _ => unreachable!(),
    }
}

fn config_routes() -> [Arc<Route>; 6] {
    [
        route(None, "/", "hub"),
        route(None, "/desktop/{name}/", "desktops"),
        route(None, "/desktop/special/", "special"),
        route(Some("desktop-{name}.hub.test"), "/", "by-host"),
        route(Some("*.hub.test"), "/", "wild"),
        route(Some("hub.test"), "/api/", "api"),
    ]
}

fn table() -> RouteTable {
    RouteTable::build(config_routes())
}

#[test]
fn longest_prefix_and_tiers() {
    let t = table();
    let m = t.lookup("hub.test", "/desktop/bob/websockify").unwrap();
    assert_eq!(upstream_name(&m), "desktops");
    assert_eq!(m.captures.get("name"), Some("bob"));
    assert_eq!(m.prefix_len, "/desktop/bob".len());
    assert_eq!(
        upstream_name(&t.lookup("x", "/desktop/special/a").unwrap()),
        "special"
    );
    assert_eq!(upstream_name(&t.lookup("x", "/desktopx").unwrap()), "hub");
    assert_eq!(upstream_name(&t.lookup("hub.test", "/api").unwrap()), "api");
    assert_eq!(
        upstream_name(&t.lookup("hub.test", "/apix").unwrap()),
        "hub"
    );
    let m = t.lookup("desktop-alice.hub.test", "/websockify").unwrap();
    assert_eq!(upstream_name(&m), "by-host");
    assert_eq!(m.captures.get("name"), Some("alice"));
    assert_eq!(
        upstream_name(&t.lookup("other.hub.test", "/").unwrap()),
        "wild"
    );
}

#[test]
fn no_route() {
    let t = RouteTable::build([route(None, "/only/", "x")]);
    assert!(t.lookup("h", "/").is_none());
    assert!(t.lookup("h", "/onl").is_none());
    assert!(t.lookup("h", "/only").is_some());
}

#[test]
fn many_literal_routes() {
    let t = RouteTable::build(
        (0..10_000).map(|i| route(None, &format!("/user/u{i}/"), &format!("u{i}"))),
    );
    assert_eq!(
        upstream_name(&t.lookup("h", "/user/u9999/lab").unwrap()),
        "u9999"
    );
}

#[test]
fn normalizes_paths() {
    assert_eq!(normalize_path("/a/b"), "/a/b");
    assert_eq!(normalize_path("/desktop/alice/../bob/"), "/desktop/bob/");
    assert_eq!(normalize_path("//api/x"), "/api/x");
    assert_eq!(normalize_path("/a/%2e%2e/b"), "/b");
    assert_eq!(normalize_path("/.."), "/");
}

#[test]
fn decoded_paths_match_and_map_back_to_the_wire() {
    let p = RequestPath::new("/has%20space/foo/x%2Fy/%61pi");
    assert_eq!(p.decoded, "/has space/foo/x%2Fy/api");
    let t = RouteTable::build([
        route(None, "/", "hub"),
        route(None, "/has space/foo/", "spaced"),
    ]);
    let m = t.lookup("h", &p.decoded).unwrap();
    assert_eq!(upstream_name(&m), "spaced");
    assert_eq!(&p.wire[p.wire_offset(m.prefix_len)..], "/x%2Fy/%61pi");
    assert_eq!(p.wire_offset(0), 0);
    let whole = RequestPath::new("/has%20space/foo");
    assert_eq!(whole.wire_offset(whole.decoded.len()), whole.wire.len());
    let plain = RequestPath::new("/user/alice/");
    assert_eq!(plain.wire_offset(11), 11);
    // Not an escape: kept as is.
    assert_eq!(RequestPath::new("/a%zz%4").decoded, "/a%zz%4");
    assert_eq!(RequestPath::new("/%E7%A7%80").decoded, "/秀");
}

/// A runtime route as the hub's admin API makes it: literal path, exact host or none,
/// labelled by its prefix.
fn runtime_route(label: &str, host: Option<&str>, path: &str, name: &str) -> Arc<Route> {
    let upstream = UpstreamRef::Fixed(Arc::new(Upstream::plain(name, "127.0.0.1:1")));
    Arc::new(Route {
        label: label.to_string(),
        ..Route::new(
            host.map(|h| HostPattern::Exact(h.to_string())),
            PathPattern::literal(path),
            upstream,
        )
    })
}

fn with_runtime(routes: &[Arc<Route>]) -> Routes {
    Routes {
        configured: Arc::new(table()),
        runtime: RuntimeTable::build(routes.iter().cloned()).unwrap(),
    }
}

fn name_at(r: &Routes, host: &str, path: &str) -> Option<String> {
    r.lookup(host, path).map(|m| upstream_name(&m).to_string())
}

#[test]
fn runtime_routes_win_at_equal_host_and_path_and_lose_to_longer_ones() {
    let r = with_runtime(&[
        runtime_route("/", None, "/", "rt-root"),
        runtime_route("/desktop/special", None, "/desktop/special", "rt-special"),
        runtime_route("/hub.test/api", Some("hub.test"), "/api", "rt-api"),
        runtime_route("/desktop", None, "/desktop", "rt-desktop"),
    ]);
    // Equal host and path: the runtime route.
    assert_eq!(name_at(&r, "x", "/").as_deref(), Some("rt-root"));
    assert_eq!(
        name_at(&r, "x", "/desktop/special/a").as_deref(),
        Some("rt-special")
    );
    assert_eq!(name_at(&r, "hub.test", "/api/x").as_deref(), Some("rt-api"));
    // A configured pattern with a longer prefix beats a shorter runtime literal, with its
    // captures; a shorter one does not beat a longer runtime literal.
    let m = r.lookup("x", "/desktop/bob/websockify").unwrap();
    assert_eq!(upstream_name(&m), "desktops");
    assert_eq!(m.captures.get("name"), Some("bob"));
    assert_eq!(name_at(&r, "x", "/desktop").as_deref(), Some("rt-desktop"));
    // The exact-host tier (runtime here) comes before configured host patterns, and falls
    // through to them when nothing in it matches.
    let r = with_runtime(&[runtime_route(
        "/alice.hub.test/x",
        Some("alice.hub.test"),
        "/x",
        "rt-alice",
    )]);
    assert_eq!(
        name_at(&r, "alice.hub.test", "/x/y").as_deref(),
        Some("rt-alice")
    );
    assert_eq!(name_at(&r, "alice.hub.test", "/y").as_deref(), Some("wild"));
    assert_eq!(name_at(&r, "hub.test", "/api/").as_deref(), Some("api"));
}

#[test]
fn removing_a_runtime_route_uncovers_the_configured_one() {
    let rt = runtime_route("/desktop/special", None, "/desktop/special", "rt-special");
    let mut r = with_runtime(std::slice::from_ref(&rt));
    assert_eq!(r.len(), 7);
    assert_eq!(
        name_at(&r, "x", "/desktop/special/").as_deref(),
        Some("rt-special")
    );
    assert!(r.runtime.remove(&rt).unwrap());
    assert!(!r.runtime.remove(&rt).unwrap());
    assert_eq!(r.len(), 6);
    assert_eq!(
        name_at(&r, "x", "/desktop/special/").as_deref(),
        Some("special")
    );
}

#[test]
fn a_runtime_route_replaces_its_label_and_aliases_serve_in_label_order() {
    let mut r = with_runtime(&[]);
    r.runtime
        .insert(runtime_route("/u/a", None, "/u/a", "one"))
        .unwrap();
    r.runtime
        .insert(runtime_route("/u/a", None, "/u/a", "two"))
        .unwrap();
    assert_eq!(r.runtime.len(), 1);
    assert_eq!(name_at(&r, "x", "/u/a").as_deref(), Some("two"));
    // Another prefix for the same place (`/u//a`): the first by prefix serves, the other
    // once it is gone.
    let alias = runtime_route("/u//a", None, "/u//a", "alias");
    r.runtime.insert(alias.clone()).unwrap();
    assert_eq!(r.runtime.len(), 2);
    assert_eq!(name_at(&r, "x", "/u/a").as_deref(), Some("alias"));
    r.runtime.remove(&alias).unwrap();
    assert_eq!(name_at(&r, "x", "/u/a").as_deref(), Some("two"));
}

#[test]
fn pattern_routes_are_not_runtime_routes() {
    let mut t = RuntimeTable::default();
    assert!(t.insert(route(None, "/desktop/{name}/", "x")).is_err());
    assert!(t.insert(route(Some("*.hub.test"), "/", "x")).is_err());
    assert!(t.is_empty());
}

/// The two tiers answer exactly as one table built from the runtime routes followed by the
/// configured ones did, after any sequence of adds and removes (a fixed pseudo-random one).
#[test]
fn incremental_tiers_match_one_rebuilt_table() {
    let hosts = [
        None,
        Some("hub.test"),
        Some("alice.hub.test"),
        Some("desktop-bob.hub.test"),
    ];
    let paths = [
        "/",
        "/api",
        "/desktop",
        "/desktop/special",
        "/desktop/bob",
        "/u/a",
        "/u/a/b",
    ];
    let probes = [
        "/",
        "/api/x",
        "/apix",
        "/desktop/",
        "/desktop/bob/websockify",
        "/desktop/special/x",
        "/u/a",
        "/u/a/b/c",
        "/u/ab",
        "/other",
    ];
    let probe_hosts = [
        "x",
        "hub.test",
        "alice.hub.test",
        "desktop-bob.hub.test",
        "z.hub.test",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut live: std::collections::BTreeMap<String, Arc<Route>> = Default::default();
    let mut routes = with_runtime(&[]);
    for step in 0..400 {
        let host = hosts[next(hosts.len())];
        let path = paths[next(paths.len())];
        let label = format!("{}{path}", host.map_or(String::new(), |h| format!("/{h}")));
        if next(3) == 0 {
            if let Some(old) = live.remove(&label) {
                assert!(routes.runtime.remove(&old).unwrap());
            }
        } else {
            let r = runtime_route(&label, host, path, &format!("rt{step}"));
            live.insert(label, r.clone());
            routes.runtime.insert(r).unwrap();
        }
        // The old way: runtime routes in prefix order, then the configured ones.
        let rebuilt = RouteTable::build(live.values().cloned().chain(config_routes()));
        assert_eq!(routes.len(), rebuilt.len());
        for h in probe_hosts {
            for p in probes {
                let (a, b) = (routes.lookup(h, p), rebuilt.lookup(h, p));
                let seen = |m: &Option<RouteMatch>| {
                    m.as_ref().map(|m| {
                        (
                            upstream_name(m).to_string(),
                            m.prefix_len,
                            format!("{:?}", m.captures),
                        )
                    })
                };
                assert_eq!(seen(&a), seen(&b), "step {step}: {h}{p}");
            }
        }
    }
}

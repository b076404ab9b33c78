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

fn table() -> RouteTable {
    RouteTable::build([
        route(None, "/", "hub"),
        route(None, "/desktop/{name}/", "desktops"),
        route(None, "/desktop/special/", "special"),
        route(Some("desktop-{name}.hub.test"), "/", "by-host"),
        route(Some("*.hub.test"), "/", "wild"),
        route(Some("hub.test"), "/api/", "api"),
    ])
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

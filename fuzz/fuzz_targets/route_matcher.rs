//! Route patterns and request hosts/paths from the fuzzer: parsing never panics, and a match
//! never claims more of the path than there is.
#![no_main]
use deskgate::routing::{normalize_path, HostPattern, PathPattern, Route, RouteTable, UpstreamRef};
use deskgate::upstream::Upstream;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\n');
    let (Some(host_pat), Some(path_pat), Some(host), Some(path)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let host_pattern = if host_pat.is_empty() {
        None
    } else {
        HostPattern::parse(host_pat).ok()
    };
    let Ok(path_pattern) = PathPattern::parse(path_pat) else {
        return;
    };
    let upstream = UpstreamRef::Fixed(Arc::new(Upstream::plain("u", "127.0.0.1:1")));
    let route = Arc::new(Route {
        strip_prefix: true,
        novnc: true,
        ..Route::new(host_pattern, path_pattern, upstream.clone())
    });
    let literal = Arc::new(Route::new(None, PathPattern::literal("/lit/x"), upstream));
    let table = RouteTable::build([route, literal]);
    let path = normalize_path(path);
    if let Some(m) = table.lookup(&host.to_ascii_lowercase(), &path) {
        assert!(m.prefix_len <= path.len());
        assert!(path.is_char_boundary(m.prefix_len));
        let _ = deskgate::edge::novnc::redirect_for(&m.route, &path, m.prefix_len, Some("a=1"), false);
    }
});

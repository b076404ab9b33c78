//! noVNC under a path prefix.
//!
//! noVNC opens its WebSocket at `/` + its `path` parameter (default `websockify`) on the page's
//! host, so behind `/desktop/alice/` it would call `/websockify` and lose the prefix. For
//! `novnc: true` routes, a page request without `path=` is redirected to carry
//! `path=desktop/alice/websockify`, and the WebSocket comes back under the prefix.

use crate::routing::Route;

/// Pages noVNC is started from; other assets keep their URLs.
const PAGES: [&str; 5] = ["", "/", "/vnc.html", "/vnc_lite.html", "/index.html"];

pub fn redirect_for(
    route: &Route,
    path: &str,
    prefix_len: usize,
    query: Option<&str>,
    upgrade: bool,
) -> Option<String> {
    if !route.novnc || upgrade {
        return None;
    }
    let prefix = &path[..prefix_len];
    let rest = &path[prefix_len..];
    if !PAGES.contains(&rest) {
        return None;
    }
    let has_path_param = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "path" || kv.starts_with("path="))
    });
    if has_path_param && !rest.is_empty() {
        return None;
    }
    let page = if rest.is_empty() { "/" } else { rest };
    let mut q = String::new();
    if let Some(existing) = query.filter(|q| !q.is_empty()) {
        q.push_str(existing);
    }
    if !has_path_param {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str("path=");
        q.push_str(prefix.trim_start_matches('/'));
        q.push_str("/websockify");
    }
    Some(format!("{prefix}{page}?{q}"))
}

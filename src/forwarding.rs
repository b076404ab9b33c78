//! What the upstream sees: the request rewritten the way a careful reverse proxy does it.
//!
//! - `X-Forwarded-For` (appended), `-Proto` and `-Host` (set);
//! - hop-by-hop headers removed, except `Upgrade`/`Connection: upgrade` on WebSocket handshakes;
//! - `Origin` and `Sec-WebSocket-*` left untouched: KasmVNC answers 200 HTML instead of 101
//!   without them (the Flask relay's bug);
//! - the upstream's Basic auth injected, replacing whatever the browser sent;
//! - the hub's cookies kept from desktops unless the route forwards them.

use pingora::http::RequestHeader;

pub struct Forwarding<'a> {
    pub client_ip: Option<String>,
    pub downstream_tls: bool,
    pub original_host: &'a str,
    pub upgrade: bool,
    pub authorization: Option<&'a http::HeaderValue>,
    pub forward_cookies: bool,
    pub drop_websocket_protocol: bool,
}

const HOP_BY_HOP: [&str; 7] = [
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "upgrade",
];

/// The request target the upstream sees: the normalized path, minus the route's prefix when
/// it strips it, with the query kept. `None` when nothing changes.
pub fn upstream_target(
    original: &http::Uri,
    normalized_path: &str,
    prefix_len: usize,
    strip_prefix: bool,
) -> Option<http::Uri> {
    let path = if strip_prefix {
        match &normalized_path[prefix_len..] {
            "" => "/",
            rest => rest,
        }
    } else {
        normalized_path
    };
    if path == original.path() {
        return None;
    }
    let target = match original.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    target.parse().ok()
}

pub fn rewrite_upstream_request(req: &mut RequestHeader, f: &Forwarding<'_>) {
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 7.6.1).
    let named: Vec<String> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade" && t != "close" && t != "keep-alive")
        .collect();
    for name in named {
        req.remove_header(name.as_str());
    }
    for name in HOP_BY_HOP {
        if !(f.upgrade && name == "upgrade") {
            req.remove_header(name);
        }
    }
    if f.upgrade {
        let _ = req.insert_header(http::header::CONNECTION, "upgrade");
    } else {
        req.remove_header(&http::header::CONNECTION);
    }

    if req.headers.get(http::header::HOST).is_none() && !f.original_host.is_empty() {
        // HTTP/2 clients send :authority instead of Host; HTTP/1 upstreams need Host.
        let _ = req.insert_header(http::header::HOST, f.original_host);
    }
    if let Some(ip) = &f.client_ip {
        let xff = match req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => format!("{prev}, {ip}"),
            _ => ip.clone(),
        };
        let _ = req.insert_header("x-forwarded-for", xff);
    }
    let _ = req.insert_header(
        "x-forwarded-proto",
        if f.downstream_tls { "https" } else { "http" },
    );
    if !f.original_host.is_empty() {
        let _ = req.insert_header("x-forwarded-host", f.original_host);
    }
    if let Some(auth) = f.authorization {
        let _ = req.insert_header(http::header::AUTHORIZATION, auth.clone());
    }
    if !f.forward_cookies {
        req.remove_header(&http::header::COOKIE);
    }
    if f.drop_websocket_protocol {
        req.remove_header(&http::header::SEC_WEBSOCKET_PROTOCOL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_targets() {
        let uri: http::Uri = "/desktop/alice/vnc.html?a=1".parse().unwrap();
        assert_eq!(
            upstream_target(&uri, "/desktop/alice/vnc.html", 14, true).unwrap(),
            "/vnc.html?a=1"
        );
        assert_eq!(
            upstream_target(&uri, "/desktop/alice/vnc.html", 14, false),
            None
        );
        let uri: http::Uri = "/desktop/alice".parse().unwrap();
        assert_eq!(
            upstream_target(&uri, "/desktop/alice", 14, true).unwrap(),
            "/"
        );
        let uri: http::Uri = "/a/../b".parse().unwrap();
        assert_eq!(upstream_target(&uri, "/b", 0, false).unwrap(), "/b");
    }

    #[test]
    fn keeps_websocket_headers_and_strips_hop_by_hop() {
        let mut req = RequestHeader::build("GET", b"/websockify", None).unwrap();
        for (k, v) in [
            ("Host", "hub.test"),
            ("Connection", "Upgrade, X-Secret-Hop"),
            ("Upgrade", "websocket"),
            ("X-Secret-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Origin", "https://hub.test"),
            ("Sec-WebSocket-Protocol", "binary"),
            ("Sec-WebSocket-Key", "abc"),
            ("Authorization", "Bearer browser"),
            ("Cookie", "hub_session=1"),
            ("X-Forwarded-For", "10.0.0.1"),
        ] {
            req.append_header(k, v).unwrap();
        }
        let auth = http::HeaderValue::from_static("Basic a2FzbTpwdw==");
        rewrite_upstream_request(
            &mut req,
            &Forwarding {
                client_ip: Some("127.0.0.1".into()),
                downstream_tls: true,
                original_host: "hub.test",
                upgrade: true,
                authorization: Some(&auth),
                forward_cookies: false,
                drop_websocket_protocol: false,
            },
        );
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("connection").as_deref(), Some("upgrade"));
        assert_eq!(h("upgrade").as_deref(), Some("websocket"));
        assert_eq!(h("x-secret-hop"), None);
        assert_eq!(h("keep-alive"), None);
        assert_eq!(h("origin").as_deref(), Some("https://hub.test"));
        assert_eq!(h("sec-websocket-protocol").as_deref(), Some("binary"));
        assert_eq!(h("authorization").as_deref(), Some("Basic a2FzbTpwdw=="));
        assert_eq!(h("cookie"), None);
        assert_eq!(h("x-forwarded-for").as_deref(), Some("10.0.0.1, 127.0.0.1"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
    }
}

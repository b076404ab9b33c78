//! What the upstream sees: the request rewritten the way a careful reverse proxy does it.
//!
//! - `X-Forwarded-For` (appended), `-Proto` and `-Host` (set);
//! - hop-by-hop headers removed, except `Upgrade`/`Connection: upgrade` on WebSocket handshakes;
//! - `Origin` and `Sec-WebSocket-*` left untouched: KasmVNC answers 200 HTML instead of 101
//!   without them (the Flask relay's bug);
//! - the upstream's Basic auth injected, replacing whatever the browser sent;
//! - the hub's cookies kept from desktops unless the route forwards them.
//!
//! And what the browser sees of the answer, on routes that ask for it (`rewrite_location`,
//! `cookie_domain`, `cookie_path`): the upstream's own address in `Location` replaced by the
//! public one, `Set-Cookie` domains and paths mapped. Other routes' answers are not looked at.

use std::net::IpAddr;

use pingora::http::RequestHeader;

pub use crate::config::{ProxyHeaders, XForwarded};
use crate::routing::response_rewrite::ResponseRewrite;

pub struct Forwarding<'a> {
    pub headers: &'a ProxyHeaders,
    pub client_ip: Option<IpAddr>,
    pub downstream_tls: bool,
    pub original_host: &'a str,
    /// `X-Forwarded-Port` with `x_forwarded: set`: the port the browser connected to.
    pub listener_port: Option<&'a HeaderValue>,
    pub upgrade: bool,
    pub authorization: Option<&'a http::HeaderValue>,
    pub forward_cookies: bool,
    pub drop_websocket_protocol: bool,
}

use http::header::{self, HeaderName, HeaderValue};

/// Inserted as `&'static str` in their wire case: Pingora's case-preserving header map takes
/// those as they are, while a `HeaderName` would be title-cased into a new allocation first.
const X_FORWARDED_FOR: &str = "X-Forwarded-For";
const X_FORWARDED_PROTO: &str = "X-Forwarded-Proto";
const X_FORWARDED_HOST: &str = "X-Forwarded-Host";
const X_FORWARDED_PORT: &str = "X-Forwarded-Port";

/// Hop-by-hop headers (RFC 9110 7.6.1), as prebuilt names: comparing and removing them costs
/// no parsing per request.
const HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::UPGRADE,
];

/// The request target the upstream sees: the normalized path, minus the route's prefix when
/// it strips it, under the target URL's own path when the route has one (`prepend_path`, as
/// configurable-http-proxy does), with the query kept. `None` when nothing changes.
pub fn upstream_target(
    original: &http::Uri,
    normalized_path: &str,
    prefix_len: usize,
    strip_prefix: bool,
    target_path: Option<&str>,
) -> Option<http::Uri> {
    let path = if strip_prefix {
        match &normalized_path[prefix_len..] {
            "" => "/",
            rest => rest,
        }
    } else {
        normalized_path
    };
    let joined;
    let path = match target_path.map(|t| t.trim_end_matches('/')) {
        Some(base) if !base.is_empty() => {
            joined = format!("{base}{path}");
            joined.as_str()
        }
        _ => path,
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
    // First, so that what deskgate sets below (X-Forwarded-*, `add:`) is never removed.
    for name in &f.headers.remove {
        req.remove_header(name);
    }
    // Headers named in `Connection` are hop-by-hop too (RFC 9110 7.6.1). Most requests carry
    // only `keep-alive` or `upgrade` there, so nothing is collected for them.
    let named: Vec<String> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("upgrade")
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
        })
        .map(str::to_ascii_lowercase)
        .collect();
    for name in named {
        req.remove_header(name.as_str());
    }
    // Remove only what is there: a removal also walks Pingora's case-preserving name map.
    for name in HOP_BY_HOP {
        if !(f.upgrade && name == header::UPGRADE) && req.headers.contains_key(&name) {
            req.remove_header(&name);
        }
    }
    if f.upgrade {
        let _ = req.insert_header(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if req.headers.contains_key(header::CONNECTION) {
        req.remove_header(&header::CONNECTION);
    }

    if !req.headers.contains_key(header::HOST) && !f.original_host.is_empty() {
        // HTTP/2 clients send :authority instead of Host; HTTP/1 upstreams need Host.
        let _ = req.insert_header(header::HOST, f.original_host);
    }
    let mut ip_buf = [0; IP_TEXT_MAX];
    let client_ip = f.client_ip.map(|ip| ip_text(ip, &mut ip_buf));
    match f.headers.x_forwarded {
        XForwarded::Set => {
            if let Some(ip) = client_ip {
                append_to(req, X_FORWARDED_FOR, ", ", ip);
            }
            let proto = if f.downstream_tls { "https" } else { "http" };
            let _ = req.insert_header(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
            if !f.original_host.is_empty() {
                let _ = req.insert_header(X_FORWARDED_HOST, f.original_host);
            }
            if let Some(port) = f.listener_port {
                let _ = req.insert_header(X_FORWARDED_PORT, port.clone());
            }
        }
        XForwarded::Append => {
            if let Some(ip) = client_ip {
                append_to(req, X_FORWARDED_FOR, ",", ip);
            }
            let port = f
                .original_host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .unwrap_or(if f.downstream_tls { 443 } else { 80 });
            append_to(req, X_FORWARDED_PORT, ",", &port.to_string());
            let proto = match (f.upgrade, f.downstream_tls) {
                (true, true) => "wss",
                (true, false) => "ws",
                (false, true) => "https",
                (false, false) => "http",
            };
            append_to(req, X_FORWARDED_PROTO, ",", proto);
            if !req.headers.contains_key(X_FORWARDED_HOST) && !f.original_host.is_empty() {
                let _ = req.insert_header(X_FORWARDED_HOST, f.original_host);
            }
        }
        XForwarded::Off => {}
    }
    for (name, value) in &f.headers.add {
        let _ = req.insert_header(name.clone(), value.clone());
    }
    if let Some(auth) = f.authorization {
        let _ = req.insert_header(header::AUTHORIZATION, auth.clone());
    }
    if !f.forward_cookies && req.headers.contains_key(header::COOKIE) {
        req.remove_header(&header::COOKIE);
    }
    if f.drop_websocket_protocol {
        req.remove_header(&header::SEC_WEBSOCKET_PROTOCOL);
    }
}

/// A listener address's port as a header value, made once per listener (`unix:` sockets: None).
pub fn port_header(addr: &str) -> Option<HeaderValue> {
    let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
    (!addr.starts_with("unix:")).then(|| HeaderValue::from(port))
}

/// The browser's side of an answer: what an upstream's own URLs are rewritten to.
pub struct PublicOrigin<'a> {
    pub tls: bool,
    /// The Host the browser sent (with its port, if any).
    pub host: &'a str,
    /// The path prefix the route matched (`/app/`); `/` for the whole host. A `rewrite_location`
    /// URL is the upstream's view of it, and becomes it.
    pub mount: &'a str,
    /// The route strips the prefix: the upstream sees the mount as `/`.
    pub stripped: bool,
    /// The server that answered (`127.0.0.1:3000`), for `rewrite_location: true`.
    pub server: Option<&'a str>,
    pub upstream_tls: bool,
}

const CONTENT_LOCATION: HeaderName = HeaderName::from_static("content-location");

/// `rewrite_location`, `cookie_domain`, `cookie_path` on an upstream's answer.
pub fn rewrite_upstream_response(
    resp: &mut pingora::http::ResponseHeader,
    rewrite: &ResponseRewrite,
    origin: &PublicOrigin<'_>,
) {
    if !rewrite.locations.is_empty() || rewrite.own_server {
        for name in [header::LOCATION, CONTENT_LOCATION] {
            let new = resp
                .headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| public_location(v, rewrite, origin));
            if let Some(new) = new {
                let _ = resp.insert_header(name, new);
            }
        }
    }
    if !rewrite.cookie_domain.is_empty() || !rewrite.cookie_path.is_empty() {
        let cookies: Vec<String> = resp
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let rewritten: Vec<Option<String>> =
            cookies.iter().map(|c| public_cookie(c, rewrite)).collect();
        if rewritten.iter().any(Option::is_some) {
            resp.remove_header(&header::SET_COOKIE);
            for (old, new) in cookies.into_iter().zip(rewritten) {
                let _ = resp.append_header(header::SET_COOKIE, new.unwrap_or(old));
            }
        }
    }
}

/// `http://127.0.0.1:3000/after` -> `https://hub.example/app/after` when it starts with one of
/// the route's upstream URLs (scheme and authority without case); None when it does not.
fn public_location(
    location: &str,
    rewrite: &ResponseRewrite,
    origin: &PublicOrigin<'_>,
) -> Option<String> {
    if origin.host.is_empty() || !location.contains("://") {
        return None;
    }
    let mount = origin.mount.trim_end_matches('/');
    let own = origin.server.filter(|_| rewrite.own_server).map(|s| {
        let scheme = if origin.upstream_tls { "https" } else { "http" };
        let seen = if origin.stripped { "" } else { mount };
        format!("{scheme}://{}{seen}/", s.to_ascii_lowercase())
    });
    let rest = rewrite
        .locations
        .iter()
        .chain(own.as_ref())
        .find_map(|prefix| strip_url_prefix(location, prefix))?;
    let scheme = if origin.tls { "https" } else { "http" };
    Some(format!("{scheme}://{}{mount}/{rest}", origin.host))
}

/// What follows `prefix` (`http://h:p/base/`) in `url`, comparing scheme and authority without
/// case; `http://h:p/base` (no slash) counts as the prefix itself.
fn strip_url_prefix<'u>(url: &'u str, prefix: &str) -> Option<&'u str> {
    let scheme_end = prefix.find("://")? + 3;
    let authority_end = scheme_end + prefix[scheme_end..].find('/')?;
    let head = url.get(..authority_end)?;
    if !head.eq_ignore_ascii_case(&prefix[..authority_end]) {
        return None;
    }
    let (url_path, prefix_path) = (&url[authority_end..], &prefix[authority_end..]);
    if url_path.is_empty() || url_path == prefix_path.trim_end_matches('/') {
        return Some("");
    }
    url_path.strip_prefix(prefix_path)
}

/// A `Set-Cookie` value with its `Domain=`/`Path=` mapped; None when nothing matched.
fn public_cookie(cookie: &str, rewrite: &ResponseRewrite) -> Option<String> {
    let mut changed = false;
    let parts: Vec<String> = cookie
        .split(';')
        .enumerate()
        .map(|(i, part)| {
            let attr = part.trim_start();
            let lead = &part[..part.len() - attr.len()];
            let value_of = |name: &str| {
                attr.get(..name.len())
                    .filter(|n| i > 0 && n.eq_ignore_ascii_case(name))
                    .map(|_| attr[name.len()..].trim())
            };
            if let Some(domain) = value_of("domain=") {
                let bare = domain.trim_start_matches('.');
                if let Some((_, to)) = rewrite
                    .cookie_domain
                    .iter()
                    .find(|(from, _)| from.trim_start_matches('.').eq_ignore_ascii_case(bare))
                {
                    changed = true;
                    return format!("{lead}Domain={to}");
                }
            } else if let Some(path) = value_of("path=") {
                if let Some((from, to)) = rewrite
                    .cookie_path
                    .iter()
                    .find(|(from, _)| path.starts_with(from.as_str()))
                {
                    changed = true;
                    return format!("{lead}Path={to}{}", &path[from.len()..]);
                }
            }
            part.to_string()
        })
        .collect();
    changed.then(|| parts.join(";"))
}

/// `name: previous<sep>value`, or `name: value` when there was none.
fn append_to(req: &mut RequestHeader, name: &'static str, sep: &str, value: &str) {
    let joined = match req.headers.get(name).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}{sep}{value}"),
        _ => {
            let _ = req.insert_header(name, value);
            return;
        }
    };
    let _ = req.insert_header(name, joined);
}

/// Room for the longest IPv6 text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const IP_TEXT_MAX: usize = 45;

/// The client address as text in `buf`. IPv4, nearly every client, is written digit by digit:
/// `Display` through `fmt` cost about 1,500 instructions per request.
fn ip_text(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &str {
    let len = match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            len
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{v6}");
            cursor.position() as usize
        }
    };
    std::str::from_utf8(&buf[..len]).expect("an address is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_as_text() {
        let mut buf = [0; IP_TEXT_MAX];
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "9.99.199.200",
            "::1",
            "2001:db8::42",
            "::ffff:192.0.2.128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(parsed, &mut buf), parsed.to_string());
        }
    }

    #[test]
    fn upstream_targets() {
        let uri: http::Uri = "/desktop/alice/vnc.html?a=1".parse().unwrap();
        assert_eq!(
            upstream_target(&uri, "/desktop/alice/vnc.html", 14, true, None).unwrap(),
            "/vnc.html?a=1"
        );
        assert_eq!(
            upstream_target(&uri, "/desktop/alice/vnc.html", 14, false, Some("/test/")).unwrap(),
            "/test/desktop/alice/vnc.html?a=1"
        );
        assert_eq!(
            upstream_target(&uri, "/desktop/alice/vnc.html", 14, false, Some("/")),
            None
        );
        let uri: http::Uri = "/desktop/alice".parse().unwrap();
        assert_eq!(
            upstream_target(&uri, "/desktop/alice", 14, true, None).unwrap(),
            "/"
        );
        let uri: http::Uri = "/a/../b".parse().unwrap();
        assert_eq!(upstream_target(&uri, "/b", 0, false, None).unwrap(), "/b");
    }

    /// The request as Pingora hands it over: with its case map (HTTP/2 upstreams) and without
    /// (HTTP/1 upstreams, pingora-proxy patch 18).
    fn with_and_without_case_map(path: &[u8]) -> [RequestHeader; 2] {
        [
            RequestHeader::build("GET", path, None).unwrap(),
            RequestHeader::build_no_case("GET", path, None).unwrap(),
        ]
    }

    #[test]
    fn keeps_websocket_headers_and_strips_hop_by_hop() {
        for req in with_and_without_case_map(b"/websockify") {
            keeps_websocket_headers_and_strips_hop_by_hop_in(req);
        }
    }

    fn keeps_websocket_headers_and_strips_hop_by_hop_in(mut req: RequestHeader) {
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
                headers: &ProxyHeaders::default(),
                client_ip: Some([127, 0, 0, 1].into()),
                downstream_tls: true,
                original_host: "hub.test",
                listener_port: None,
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
        // What goes on the wire, where a case map out of step with the headers would drop some.
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap().to_ascii_lowercase();
        for line in [
            "connection: upgrade\r\n",
            "x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n",
            "x-forwarded-proto: https\r\n",
            "x-forwarded-host: hub.test\r\n",
            "authorization: basic a2fzbtpwdw==\r\n",
        ] {
            assert!(wire.contains(line), "missing {line:?} in {wire:?}");
        }
    }

    #[test]
    fn appends_forwarded_headers_like_configurable_http_proxy() {
        for req in with_and_without_case_map(b"/user/alice/") {
            appends_forwarded_headers_in(req);
        }
    }

    fn appends_forwarded_headers_in(mut req: RequestHeader) {
        req.append_header("Host", "hub.test:8000").unwrap();
        req.append_header("X-Forwarded-For", "10.0.0.1").unwrap();
        req.append_header("X-Forwarded-Proto", "https").unwrap();
        req.append_header("X-Forwarded-Host", "outer.test").unwrap();
        req.append_header("Remote-User", "admin").unwrap();
        let headers = ProxyHeaders {
            remove: vec![http::HeaderName::from_static("remote-user")],
            x_forwarded: XForwarded::Append,
            add: vec![(
                http::HeaderName::from_static("x-hub"),
                http::HeaderValue::from_static("1"),
            )],
        };
        rewrite_upstream_request(
            &mut req,
            &Forwarding {
                headers: &headers,
                client_ip: Some([127, 0, 0, 1].into()),
                downstream_tls: false,
                original_host: "hub.test:8000",
                listener_port: None,
                upgrade: false,
                authorization: None,
                forward_cookies: true,
                drop_websocket_protocol: false,
            },
        );
        let h = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(h("x-forwarded-for").as_deref(), Some("10.0.0.1,127.0.0.1"));
        assert_eq!(h("x-forwarded-port").as_deref(), Some("8000"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https,http"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("outer.test"));
        assert_eq!(h("x-hub").as_deref(), Some("1"));
        assert_eq!(
            h("remote-user"),
            None,
            "a browser's identity header is removed"
        );
    }

    #[test]
    fn locations_and_cookies_from_the_upstream_become_public() {
        let rewrite = ResponseRewrite {
            locations: vec![
                "http://127.0.0.1:3000/".into(),
                "http://localhost:3000/base/".into(),
            ],
            own_server: true,
            cookie_domain: vec![("localhost".into(), "hub.example".into())],
            cookie_path: vec![("/".into(), "/app/".into())],
        };
        let origin = PublicOrigin {
            tls: true,
            host: "hub.example:8443",
            mount: "/app/",
            stripped: true,
            server: Some("10.0.0.5:7001"),
            upstream_tls: true,
        };
        let loc = |l: &str| public_location(l, &rewrite, &origin);
        assert_eq!(
            loc("http://127.0.0.1:3000/after?x=1").as_deref(),
            Some("https://hub.example:8443/app/after?x=1")
        );
        assert_eq!(
            loc("HTTP://LOCALHOST:3000/base/x").as_deref(),
            Some("https://hub.example:8443/app/x")
        );
        assert_eq!(
            loc("http://localhost:3000/base").as_deref(),
            Some("https://hub.example:8443/app/")
        );
        assert_eq!(
            loc("http://127.0.0.1:3000").as_deref(),
            Some("https://hub.example:8443/app/")
        );
        assert_eq!(
            loc("https://10.0.0.5:7001/vnc.html").as_deref(),
            Some("https://hub.example:8443/app/vnc.html")
        );
        for untouched in [
            "/relative",
            "http://127.0.0.1:30000/x",
            "http://localhost:3000/other/",
            "https://elsewhere/",
        ] {
            assert_eq!(loc(untouched), None, "{untouched}");
        }
        // Not stripped: the upstream saw the prefix itself.
        let kept = PublicOrigin {
            stripped: false,
            ..origin
        };
        assert_eq!(
            public_location("https://10.0.0.5:7001/app/x", &rewrite, &kept).as_deref(),
            Some("https://hub.example:8443/app/x")
        );

        assert_eq!(
            public_cookie("sid=1; Path=/; Domain=.LocalHost; HttpOnly", &rewrite).as_deref(),
            Some("sid=1; Path=/app/; Domain=hub.example; HttpOnly")
        );
        assert_eq!(
            public_cookie("sid=1; path=/x", &rewrite).as_deref(),
            Some("sid=1; Path=/app/x")
        );
        assert_eq!(
            public_cookie("domain=localhost; Secure", &rewrite),
            None,
            "the cookie's own name is not an attribute"
        );
        assert_eq!(public_cookie("sid=1; Domain=other.example", &rewrite), None);

        let mut resp = pingora::http::ResponseHeader::build(302, None).unwrap();
        resp.append_header("Location", "http://127.0.0.1:3000/after")
            .unwrap();
        resp.append_header("Set-Cookie", "a=1; Domain=localhost")
            .unwrap();
        resp.append_header("Set-Cookie", "b=2").unwrap();
        rewrite_upstream_response(&mut resp, &rewrite, &origin);
        let cookies: Vec<_> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(cookies, ["a=1; Domain=hub.example", "b=2"]);
        assert_eq!(
            resp.headers["location"],
            "https://hub.example:8443/app/after"
        );
    }

    #[test]
    fn x_forwarded_port_is_the_listeners() {
        assert_eq!(port_header("0.0.0.0:8443").unwrap(), "8443");
        assert_eq!(port_header("[::]:443").unwrap(), "443");
        assert!(port_header("unix:/run/d.sock").is_none());
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-Port", "1").unwrap();
        let port = port_header("[::]:443").unwrap();
        rewrite_upstream_request(
            &mut req,
            &Forwarding {
                headers: &ProxyHeaders::default(),
                client_ip: None,
                downstream_tls: true,
                original_host: "hub.test",
                listener_port: Some(&port),
                upgrade: false,
                authorization: None,
                forward_cookies: true,
                drop_websocket_protocol: false,
            },
        );
        assert_eq!(req.headers["x-forwarded-port"], "443");
    }
}

//! What a route changes in its upstream's answers (`rewrite_location`, `cookie_domain`,
//! `cookie_path`: nginx's `proxy_redirect` and `proxy_cookie_*`, Apache's `ProxyPassReverse*`).
//! Plain data; `edge::forwarding` applies it, only on routes that set it.

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseRewrite {
    /// URL prefixes (`http://127.0.0.1:3000/`: lower-case scheme and authority, ending in `/`)
    /// an absolute `Location`/`Content-Location` is rewritten from.
    pub locations: Vec<String>,
    /// `rewrite_location: true`: also the URL of the server that answered.
    pub own_server: bool,
    /// `Domain=` values (compared without case or a leading dot) -> the public domain.
    pub cookie_domain: Vec<(String, String)>,
    /// `Path=` prefixes -> their public replacement.
    pub cookie_path: Vec<(String, String)>,
}

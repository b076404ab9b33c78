use super::*;

fn convert_text(text: &str) -> Conversion {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("site.conf");
    std::fs::write(&f, text).unwrap();
    let opts = ImportOptions {
        resolver_url: Some("http://hub:5020/api/target/{name}".into()),
        resolver_headers: vec!["X-API-Key: env:HUB_API_KEY".into()],
        secrets_dir: None,
    };
    convert(&[f], &opts).unwrap()
}

fn vhost(port: u16, body: &str) -> String {
    format!("<VirtualHost *:{port}>\n{body}\n</VirtualHost>\n")
}

#[test]
fn proxy_pass_prefixes_params_and_exclusions() {
    let c = convert_text(&vhost(
        80,
        "ProxyPass /desktop/alice/ https://10.0.0.5:7001/ timeout=600 connectiontimeout=5\nProxyPass /api/ http://hub:5020/api/\nProxyPass /static/ !\nProxyPass /x/ http://hub:5020/y/\nSSLProxyVerify none",
    ));
    let y = &c.yaml;
    assert!(
        y.contains(
            "  10_0_0_5_7001:\n    servers: [\"10.0.0.5:7001\"]\n    tls: { verify: false }"
        ),
        "{y}"
    );
    assert!(
        y.contains(
            "  - path: \"/desktop/alice/\"\n    upstream: 10_0_0_5_7001\n    strip_prefix: true"
        ),
        "{y}"
    );
    assert!(
        y.contains("  - path: \"/api/\"\n    upstream: hub_5020\n"),
        "{y}"
    );
    assert!(
        y.contains("  connect: 5s") && y.contains("  upgraded_idle: 600s"),
        "{y}"
    );
    assert_eq!(c.skipped.len(), 2, "{:?}", c.skipped);
    assert!(c.skipped[0].contains("ProxyPass /static/ !"));
    assert!(c.skipped[1].contains("backend path differs"));
}

#[test]
fn plain_vhosts_that_only_redirect_become_redirect_https() {
    for body in [
        "Redirect permanent / https://hub.example.org/",
        "RewriteEngine On\nRewriteCond %{HTTPS} off\nRewriteRule ^ https://%{HTTP_HOST}%{REQUEST_URI} [R=301,L]",
        "RewriteEngine On\nRewriteRule ^/(.*)$ https://%{HTTP_HOST}/$1 [R=301,L]",
    ] {
        let c = convert_text(&vhost(80, body));
        assert!(c.yaml.contains("redirect_https: true"), "{body}: {}", c.yaml);
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    }
    // A redirect elsewhere is not redirect_https.
    let c = convert_text(&vhost(80, "Redirect / https://other.example.org/login"));
    assert!(!c.yaml.contains("redirect_https: true") && c.skipped.len() == 1);
}

#[test]
fn tls_files_notes_and_lets_encrypt() {
    let c = convert_text(&vhost(
        443,
        "ServerName hub.example.org\nSSLEngine on\nSSLCertificateFile /etc/letsencrypt/live/hub.example.org/cert.pem\nSSLCertificateKeyFile /etc/letsencrypt/live/hub.example.org/privkey.pem\nSSLCertificateChainFile /etc/letsencrypt/live/hub.example.org/chain.pem\nSSLProtocol TLSv1.2\nProxyPass / http://hub:5020/",
    ));
    let y = &c.yaml;
    assert!(
        y.contains("cert: \"/etc/letsencrypt/live/hub.example.org/cert.pem\""),
        "{y}"
    );
    assert!(
        y.contains("acme: { directory: \"https://acme-v02.api.letsencrypt.org/directory\""),
        "{y}"
    );
    assert!(
        y.contains("give it the full chain") && y.contains("TLS 1.2 and 1.3 only"),
        "{y}"
    );
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
}

#[test]
fn request_headers_set_are_added_others_reported() {
    let c = convert_text(&vhost(
        80,
        "ProxyPass / http://hub:5020/\nRequestHeader set X-Hub-Edge deskgate\nRequestHeader set X-Forwarded-Proto https\nRequestHeader unset X-User\nRequestHeader set Upgrade websocket env=WS",
    ));
    assert!(
        c.yaml.contains("proxy_headers:\n  add:")
            && c.yaml.contains("\"X-Hub-Edge\": \"deskgate\""),
        "{}",
        c.yaml
    );
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    assert!(c.skipped[0].contains("RequestHeader unset X-User"));
    assert!(c.ignored.iter().any(|i| i.starts_with("X-Forwarded-*")));
    assert!(c
        .ignored
        .iter()
        .any(|i| i.starts_with("Upgrade/Connection workarounds")));
}

#[test]
fn rewrite_map_becomes_a_resolver_with_fallback_and_basic_auth() {
    let c = convert_text(&vhost(
        443,
        "ServerName hub.example.org\nServerAlias desktop-*.hub.example.org\nSSLEngine on\nSSLCertificateFile /c.pem\nSSLCertificateKeyFile /k.pem\nSSLProxyEngine on\nSSLProxyVerify none\n<If \"%{HTTP_HOST} =~ /^desktop-/\">\nRequestHeader set Authorization \"Basic dTpw\"\n</If>\nRewriteEngine On\nRewriteMap c \"prg:/bin/map\"\nRewriteCond ${c:%{HTTP_HOST}} ^$\nRewriteRule ^ https://hub.example.org/ [R=302,L]\nRewriteRule ^/(.*)$ https://${c:%{HTTP_HOST}}/$1 [P,L]\nProxyPass / http://hub:5020/",
    ));
    let y = &c.yaml;
    assert!(y.contains("  - host: \"desktop-{name}.hub.example.org\"\n    path: \"/\"\n    upstream:\n      resolve: \"http://hub:5020/api/target/{name}\""), "{y}");
    assert!(
        y.contains("headers: { \"X-API-Key\": { env: \"HUB_API_KEY\" } }"),
        "{y}"
    );
    assert!(y.contains("tls: { verify: false }"), "{y}");
    assert!(
        y.contains("basic_auth: { user: \"u\", password_env: DESKGATE_BASIC_AUTH_1 }"),
        "{y}"
    );
    assert!(
        y.contains("fallback: { redirect: \"https://hub.example.org/\" }"),
        "{y}"
    );
    assert!(!y.contains("dTpw"), "the credential stays out of the YAML");
    assert!(c.notices[0].contains("DESKGATE_BASIC_AUTH_1"));
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
}

#[test]
fn shared_addresses_route_by_host_and_the_first_is_the_default() {
    let c = convert_text(&format!(
        "{}{}",
        vhost(80, "ServerName a.example.org\nProxyPass / http://a:1/"),
        vhost(
            80,
            "ServerName b.example.org\nServerAlias *.b.example.org\nProxyPass / http://b:2/"
        )
    ));
    let y = &c.yaml;
    assert!(
        y.contains("  - host: \"a.example.org\"\n    path: \"/\"\n    upstream: a_1"),
        "{y}"
    );
    assert!(y.contains("  - path: \"/\"\n    upstream: a_1"), "{y}");
    assert!(
        y.contains("  - host: \"*.b.example.org\"\n    path: \"/\"\n    upstream: b_2"),
        "{y}"
    );
    assert_eq!(y.matches("- addr:").count(), 1, "{y}");
}

#[test]
fn helpers() {
    assert_eq!(
        host_template(r"^desktop-([a-z0-9_-]+)\.hub\.example\.org$").as_deref(),
        Some("desktop-{name}.hub.example.org")
    );
    assert_eq!(host_template(r"^(a)(b)$"), None);
    assert_eq!(
        host_pattern("desktop-*.hub.test").as_deref(),
        Some("desktop-{name}.hub.test")
    );
    assert_eq!(host_pattern("*.hub.test").as_deref(), Some("*.hub.test"));
    assert_eq!(host_pattern("a*b*.hub.test"), None);
    assert!(regex_covers("^desktop-", "desktop-{name}.hub.test"));
    assert!(!regex_covers("^desktop-", "hub.test"));
    assert!(is_no_answer("${m:%1}", "^$") && is_no_answer("${m:%1|NULL}", "^NULL$"));
    assert!(!is_no_answer("${m:%1}", "^NULL$"));
    let f = Flags::parse("[R=301,L]");
    assert_eq!((f.proxy, f.redirect), (false, Some(301)));
    assert!(Flags::parse("[E=UPGRADE:%{HTTP:Upgrade}]").env_only);
    assert_eq!(listen_addr("*:443"), "0.0.0.0:443");
    assert_eq!(listen_addr("[::]:8443"), "[::]:8443");
}

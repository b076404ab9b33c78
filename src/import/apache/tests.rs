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
            "  10_0_0_5_7001:\n    servers:\n    - 10.0.0.5:7001\n    tls:\n      verify: false"
        ),
        "{y}"
    );
    assert!(
        y.contains("- path: /desktop/alice/\n  upstream: 10_0_0_5_7001\n  strip_prefix: true"),
        "{y}"
    );
    assert!(y.contains("- path: /api/\n  upstream: hub_5020\n"), "{y}");
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
        "RewriteEngine On\nRewriteCond %{HTTPS} off\nRewriteRule ^ https://%{HTTP_HOST}%{REQUEST_URI} [R=301,L]",
        "RewriteEngine On\nRewriteRule ^/(.*)$ https://%{HTTP_HOST}/$1 [R=301,L]",
        "<Location \"/\">\nRedirect permanent \"https://%{HTTP_HOST}%{REQUEST_URI}\"\n</Location>",
    ] {
        let c = convert_text(&vhost(80, body));
        assert!(c.yaml.contains("redirect_https: true"), "{body}: {}", c.yaml);
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    }
    // Item 6: `Redirect / https://fixed-host/` goes to that host, not the client's.
    let c = convert_text(&vhost(80, "Redirect permanent / https://hub.example.org/"));
    assert!(
        c.yaml.contains("redirect_to: https://hub.example.org\n") && c.skipped.is_empty(),
        "{}",
        c.yaml
    );
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
        y.contains("cert: /etc/letsencrypt/live/hub.example.org/cert.pem"),
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
fn request_headers_set_are_added_unset_removed_others_reported() {
    let c = convert_text(&vhost(
        80,
        "ProxyPass / http://hub:5020/\nRequestHeader set X-Hub-Edge deskgate\nRequestHeader set X-Forwarded-Proto https\nRequestHeader unset X-User\nRequestHeader unset Remote-User env=SSO\nRequestHeader set Upgrade websocket env=WS",
    ));
    assert!(
        c.yaml.contains("proxy_headers:\n  add:") && c.yaml.contains("    X-Hub-Edge: deskgate"),
        "{}",
        c.yaml
    );
    assert!(
        c.yaml.contains("  remove:\n") && c.yaml.contains("  - X-User"),
        "{}",
        c.yaml
    );
    // Only sometimes removed in Apache: refused rather than guessed.
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    assert!(c.skipped[0].contains("RequestHeader unset Remote-User env=SSO"));
    assert!(c.ignored.iter().any(|i| i.starts_with("X-Forwarded-For/")));
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
    assert!(y.contains("- host: desktop-{name}.hub.example.org\n  path: /\n  upstream:\n    resolve: http://hub:5020/api/target/{name}"), "{y}");
    assert!(
        y.contains("    headers:\n      X-API-Key:\n        env: HUB_API_KEY"),
        "{y}"
    );
    assert!(y.contains("    tls:\n      verify: false"), "{y}");
    assert!(
        y.contains("    basic_auth:\n      user: u\n      password_env: DESKGATE_BASIC_AUTH_1"),
        "{y}"
    );
    assert!(
        y.contains("  fallback:\n    redirect: https://hub.example.org/"),
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
        y.contains("- host: a.example.org\n  path: /\n  upstream: a_1"),
        "{y}"
    );
    assert!(y.contains("- path: /\n  upstream: a_1"), "{y}");
    assert!(
        y.contains("- host: '*.b.example.org'\n  path: /\n  upstream: b_2"),
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
    assert_eq!(listen_addr("*:443"), "[::]:443");
    assert_eq!(listen_addr("[::]:8443"), "[::]:8443");
}

fn convert_with(text: &str, opts: &ImportOptions) -> Result<Conversion, String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("site.conf");
    std::fs::write(&f, text).unwrap();
    convert(&[f], opts).map_err(|e| e.to_string())
}

const HUB_443: &str = "ServerName hub.example.org\nServerAlias desktop-*.hub.example.org\nSSLEngine on\nSSLCertificateFile /c.pem\nSSLCertificateKeyFile /k.pem\nSSLProxyEngine on\nSSLProxyVerify none\nRewriteEngine On\nRewriteMap c \"prg:/bin/map\"";

/// Item 1: a second vhost on the hub's address; the hub's ProxyPass prefixes stay on its
/// names and never beat the desktops' lookup; host-less routes come last.
#[test]
fn second_vhost_keeps_hub_prefixes_off_the_desktops() {
    for hub_first in [true, false] {
        let hub = vhost(443, &format!("{HUB_443}\nRewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9]+)\\.hub\\.example\\.org$\nRewriteRule ^/(.*)$ https://${{c:%1}}/$1 [P,L]\nProxyPass /api/ http://127.0.0.1:5020/api/\nProxyPass /ws/ ws://127.0.0.1:5020/ws/\nProxyPass / http://127.0.0.1:3000/"));
        let other = vhost(443, "ServerName www.example.org\nSSLEngine on\nSSLCertificateFile /w.pem\nSSLCertificateKeyFile /wk.pem\nProxyPass / http://127.0.0.1:8080/");
        let text = if hub_first {
            format!("{hub}{other}")
        } else {
            format!("{other}{hub}")
        };
        let c = convert_text(&text);
        let y = &c.yaml;
        assert!(
            !y.contains("host: desktop-{name}.hub.example.org\n  path: /api/"),
            "{y}"
        );
        assert!(y.contains("- host: hub.example.org\n  path: /api/"), "{y}");
        assert!(y.contains("- host: www.example.org\n  path: /"), "{y}");
        let first_hostless = y.find("\n- path:").unwrap_or(y.len());
        let last_hostful = y.rfind("\n- host:").unwrap();
        assert!(last_hostful < first_hostless, "host-less routes last: {y}");
        // Only the first vhost on the address gets host-less routes.
        let default_upstream = if hub_first {
            "127_0_0_1_3000"
        } else {
            "127_0_0_1_8080"
        };
        assert!(
            y.contains(&format!("- path: /\n  upstream: {default_upstream}")),
            "{y}"
        );
        assert_eq!(y.matches("\n- path: /\n").count(), 1, "{y}");
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    }
}

/// Item 2: credentials never show, and conditions that cannot be expressed refuse the header.
#[test]
fn credentials_are_refused_by_name_under_inexpressible_conditions() {
    let basic = "Basic a2FzbV91c2VyOnMzY3JldC1wdw=="; // kasm_user:s3cret-pw
    let route = "RewriteCond %{HTTP_HOST} ^desktop-([a-z0-9]+)\\.hub\\.example\\.org$\nRewriteRule ^/(.*)$ https://${c:%1}/$1 [P,L]\nProxyPass / http://127.0.0.1:3000/";
    let refused = [
        format!("<If \"%{{HTTP_HOST}} != 'hub.example.org'\">\nRequestHeader set Authorization \"{basic}\"\n</If>"),
        format!("<If \"%{{HTTP_HOST}} =~ /^desktop-/ && -n %{{HTTP_COOKIE}}\">\nRequestHeader set Authorization \"{basic}\"\n</If>"),
        format!("<If \"%{{HTTP_HOST}} =~ /^(?!hub)/\">\nRequestHeader set Authorization \"{basic}\"\n</If>"),
        format!("RequestHeader set Authorization \"{basic}\" env=desktop"),
        format!("RequestHeader append Authorization \"{basic}\""),
        "RequestHeader set X-API-Key s3cret-pw".to_string(),
        "RequestHeader set X-Auth-Token s3cret-pw".to_string(),
        "RequestHeader merge Client-Secret s3cret-pw".to_string(),
        "RequestHeader edit Authorization ^Basic.* \"Bearer s3cret-pw\"".to_string(),
        format!("<If \"%{{HTTP_HOST}} =~ /^desktop-[a-z]+/\">\nRequestHeader set Authorization \"{basic}\"\n</If>"),
    ];
    for form in &refused {
        let c = convert_text(&vhost(443, &format!("{HUB_443}\n{form}\n{route}")));
        let all = format!("{}{:?}{:?}{:?}", c.yaml, c.skipped, c.ignored, c.notices);
        assert!(
            !all.contains("s3cret-pw") && !all.contains("a2FzbV91c2VyOnMzY3JldC1wdw"),
            "{form}: {all}"
        );
        assert!(
            !c.yaml.contains("basic_auth:"),
            "{form}: not widened: {}",
            c.yaml
        );
        assert_eq!(c.skipped.len(), 1, "{form}: {:?}", c.skipped);
    }
    // Expressible: `==` on one exact host, `=~` with a literal start, setifempty.
    for form in [
        format!("<If \"%{{HTTP_HOST}} =~ /^desktop-/\">\nRequestHeader setifempty Authorization \"{basic}\"\n</If>"),
        format!("RequestHeader set Authorization \"{basic}\""),
    ] {
        let c = convert_text(&vhost(443, &format!("{HUB_443}\n{form}\n{route}")));
        assert!(c.yaml.contains("    basic_auth:\n      user: kasm_user\n      password_env: DESKGATE_BASIC_AUTH_1"), "{form}: {}", c.yaml);
        assert!(!c.yaml.contains("s3cret-pw"), "{}", c.yaml);
    }
    // A user:password URL is refused and never shown.
    let c = convert_text(&vhost(
        80,
        "ProxyPass / http://admin:s3cret-pw@127.0.0.1:3000/",
    ));
    let all = format!("{}{:?}", c.yaml, c.skipped);
    assert!(!all.contains("s3cret-pw") && c.skipped.len() == 1, "{all}");
}

/// Item 3: the hub's production shape, `!^NULL$` guards then a fall-through redirect.
#[test]
fn fall_through_redirect_after_null_guards_is_the_fallback() {
    let c = convert_text(&vhost(443, &format!("{HUB_443}\nRewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9]+)\\.hub\\.example\\.org$ [NC]\nRewriteCond ${{c:%1}} !^NULL$\nRewriteRule ^/(.*)$ https://${{c:%1}}/$1 [P,L]\nRewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9]+)\\.hub\\.example\\.org$ [NC]\nRewriteRule ^ https://hub.example.org/ [R=302,L]\nProxyPass / http://127.0.0.1:3000/")));
    let y = &c.yaml;
    assert!(
        y.contains("  fallback:\n    redirect: https://hub.example.org/"),
        "{y}"
    );
    assert!(y.contains("never fired"), "{y}");
    assert!(
        c.notes.iter().any(|n| n.contains("Apache answered 400")),
        "{:?}",
        c.notes
    );
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
}

/// Item 4: resolver options that would silently break every lookup are refused up front.
#[test]
fn resolver_options_are_checked() {
    let opts = |url: &str, header: &str| ImportOptions {
        resolver_url: Some(url.into()),
        resolver_headers: vec![header.into()],
        secrets_dir: None,
    };
    let good = "http://hub:5020/api/target/{name}";
    for (url, header, expected) in [
        (
            good,
            "X-API-Key: s3cret-pw",
            "neither env:VARIABLE nor file:PATH",
        ),
        (
            good,
            "X-API-Key: ENV:HUB_KEY",
            "neither env:VARIABLE nor file:PATH",
        ),
        (good, "X-API-Key=s3cret-pw", "no `NAME:`"),
        (
            "http://hub:5020/api/target/",
            "X-API-Key: env:K",
            "no `{name}`",
        ),
        (
            "hub:5020/{name}",
            "X-API-Key: env:K",
            "expected an http:// or https:// URL",
        ),
    ] {
        let e = convert_with(&vhost(80, "ProxyPass / http://a:1/"), &opts(url, header))
            .err()
            .unwrap();
        assert!(e.contains(expected), "{url} {header}: {e}");
        assert!(!e.contains("s3cret-pw"), "{e}");
    }
    assert!(convert_with(
        &vhost(80, "ProxyPass / http://a:1/"),
        &opts(good, "X-API-Key: file:/run/k")
    )
    .is_ok());
}

/// Item 5: things with no effect do not make the import fail.
#[test]
fn no_false_positives() {
    let c = convert_text(&vhost(443, &format!("{HUB_443}\nRewriteCond %{{HTTP_HOST}} ^hub\\.example\\.org$ [NC]\nRewriteRule .* - [S=2]\nRewriteCond %{{HTTP:Upgrade}} websocket [NC]\nRewriteRule ^/(.*)$ wss://${{c:%{{HTTP_HOST}}}}/$1 [P,L]\nRewriteRule ^/(.*)$ https://${{c:%{{HTTP_HOST}}}}/$1 [P,L]\nProxyPass / http://127.0.0.1:3000/\nProxyPassReverse / http://127.0.0.1:3000/\nProxyPassReverseCookiePath / /\n<Proxy *>\nRequire all granted\n</Proxy>")));
    assert!(c.skipped.is_empty(), "{:?}\n{}", c.skipped, c.yaml);
    assert!(
        c.yaml.contains("host: desktop-{name}.hub.example.org"),
        "{}",
        c.yaml
    );
    let c = convert_text(&vhost(80, "RewriteEngine On\nRewriteCond %{HTTP:Upgrade} =websocket [NC]\nRewriteRule /(.*) ws://127.0.0.1:8888/$1 [P,L]\nRewriteCond %{HTTP:Upgrade} !=websocket [NC]\nRewriteRule /(.*) http://127.0.0.1:8888/$1 [P,L]"));
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    assert!(
        c.yaml.contains("- path: /\n  upstream: 127_0_0_1_8888"),
        "{}",
        c.yaml
    );
    // A condition that narrows a [P] rule in a way deskgate cannot express is still a gap.
    let c = convert_text(&vhost(80, "RewriteEngine On\nRewriteCond %{REMOTE_ADDR} ^10\\.\nRewriteRule ^/admin/(.*)$ http://127.0.0.1:9/$1 [P]"));
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
}

/// Item 6: response rewriting, IPv6, and the honest comment on `(.+)`.
#[test]
fn location_cookies_ipv6_and_dotted_hosts() {
    let c = convert_text(&vhost(443, "ServerName hub.example.org\nSSLEngine on\nSSLCertificateFile /c.pem\nSSLCertificateKeyFile /k.pem\nProxyPass /app/ http://127.0.0.1:3000/\nProxyPassReverse /app/ http://127.0.0.1:3000/\nProxyPassReverseCookieDomain localhost hub.example.org\nProxyPassReverseCookiePath / /app/"));
    let y = &c.yaml;
    assert!(
        y.contains("  rewrite_location: http://127.0.0.1:3000/"),
        "{y}"
    );
    assert!(
        y.contains("  cookie_domain:\n    localhost: hub.example.org"),
        "{y}"
    );
    assert!(y.contains("  cookie_path:\n    /: /app/"), "{y}");
    assert!(y.contains("- addr: '[::]:443'"), "{y}");
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
    let c = convert_text(&vhost(443, &format!("{HUB_443}\nRewriteCond %{{HTTP_HOST}} ^desktop-(.+)\\.hub\\.example\\.org$\nRewriteRule ^/(.*)$ https://${{c:%1}}/$1 [P,L]")));
    assert!(
        c.yaml.contains("also matches names with dots"),
        "{}",
        c.yaml
    );
}

#[test]
fn host_regexes_cover_templates_only_when_every_name_matches() {
    let t = "desktop-{name}.hub.example.org";
    for (regex, covers) in [
        ("^desktop-", true),
        ("desktop-", true),
        ("^desktop-.*\\.hub\\.example\\.org$", true),
        ("^desktop-(.+)\\.hub\\.example\\.org$", true),
        ("^desktop-.*\\.other\\.org$", false),
        ("^desktop-[a-z]+", false),
        ("^desktop-a", false),
        ("^(desktop|vnc)-", false),
        ("^desktop-alice\\.hub\\.example\\.org$", false),
    ] {
        assert_eq!(regex_covers(regex, t), covers, "{regex}");
    }
    assert!(regex_covers("^hub\\.example\\.org$", "hub.example.org"));
    assert!(!regex_covers(
        "^hub\\.example\\.org$",
        "www.hub.example.org"
    ));
}

/// deskgate's routes apply to every listener: a vhost on another address with other routes is
/// a gap; the same routes on both addresses are not.
#[test]
fn routes_of_one_address_served_on_another_are_reported() {
    let c = convert_text(&format!(
        "{}{}",
        vhost(8080, "ProxyPass /a/ http://a:1/\nProxyPass / http://b:2/"),
        vhost(8448, "ProxyPass / http://b:2/")
    ));
    assert_eq!(c.skipped.len(), 1, "{:?}", c.skipped);
    assert!(
        c.skipped[0].contains("also served on [::]:8448"),
        "{:?}",
        c.skipped
    );
    let c = convert_text(&format!(
        "{}{}",
        vhost(8080, "ProxyPass / http://b:2/"),
        vhost(8081, "ProxyPass / http://b:2/")
    ));
    assert!(c.skipped.is_empty(), "{:?}", c.skipped);
}

/// `timeout=` on one ProxyPass only: the others waited Apache's ProxyTimeout/Timeout, which
/// deskgate's single `upgraded_idle` must not undercut.
#[test]
fn one_short_route_timeout_does_not_cut_the_others() {
    let c = convert_text(&vhost(
        80,
        "ProxyPass /metrics/ http://m:1/ timeout=30\nProxyPass / http://hub:2/",
    ));
    assert!(c.yaml.contains("  upgraded_idle: 60s"), "{}", c.yaml);
    let c = convert_text(&vhost(
        80,
        "Timeout 600\nProxyPass /metrics/ http://m:1/ timeout=30\nProxyPass / http://hub:2/",
    ));
    assert!(c.yaml.contains("  upgraded_idle: 600s"), "{}", c.yaml);
    let c = convert_text(&vhost(80, "ProxyPass / http://hub:2/ timeout=30"));
    assert!(c.yaml.contains("  upgraded_idle: 30s"), "{}", c.yaml);
}

/// Every golden YAML the importer wrote reads into the config's raw model and serializes back
/// to the same document: no key the importer writes is lost or changed on the way.
#[test]
fn goldens_survive_parse_serialize_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apache");
    let mut files = Vec::new();
    for dir in [
        root.clone(),
        root.join("corpus/golden"),
        root.join("items/golden"),
    ] {
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_some_and(|e| e == "yaml") {
                files.push(f);
            }
        }
    }
    let mut checked = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // A refused file's golden is the refusal, not YAML.
        if !text.starts_with("# Generated by `deskgate import apache`") {
            continue;
        }
        let raw: RawConfig =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let written = serde_yaml::to_string(&raw).unwrap();
        let as_read: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let as_written: serde_yaml::Value = serde_yaml::from_str(&written).unwrap();
        assert_eq!(as_read, as_written, "{}", f.display());
        let again: RawConfig = serde_yaml::from_str(&written).unwrap();
        assert_eq!(
            serde_yaml::to_string(&again).unwrap(),
            written,
            "{}",
            f.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 30,
        "only {checked} goldens found in {}",
        root.display()
    );
}

/// A config with every field the importer writes survives serialize -> deserialize, in the
/// forms `config::load` reads (durations as `30s`/`250ms`, secrets as references).
#[test]
fn every_field_the_importer_writes_survives_a_round_trip() {
    let auth = |file: Option<&str>, env: Option<&str>| RawBasicAuth {
        user: "kasm_user".into(),
        password_file: file.map(Into::into),
        password_env: env.map(Into::into),
    };
    let route = |host: Option<&str>, upstream, rewrite: Option<RawRewriteLocation>| RawRoute {
        host: host.map(Into::into),
        path: Some("/app/".into()),
        upstream: Some(upstream),
        strip_prefix: true,
        block: Vec::new(),
        novnc: false,
        auth: None,
        fallback: Some(RawFallback {
            redirect: "https://hub.example.org/".into(),
        }),
        drop_websocket_protocol: false,
        forward_cookies: None,
        rewrite_location: rewrite,
        cookie_domain: Some(BTreeMap::from([(
            "localhost".into(),
            "hub.example.org".into(),
        )])),
        cookie_path: Some(BTreeMap::from([("/".into(), "/app/".into())])),
        websocket: None,
    };
    let mut config = RawConfig::default();
    let mut tls = Listener {
        addr: "[::]:443".into(),
        ..Listener::default()
    };
    for (i, host) in ["hub.example.org", "*.www.example.org"].iter().enumerate() {
        tls.certs.push(Cert {
            comments: Vec::new(),
            cert: format!("/etc/ssl/{i}.pem"),
            key: format!("/etc/ssl/{i}.key"),
            hosts: vec![host.to_string()],
        });
    }
    let redirect = |to: Option<&str>| Listener {
        addr: "0.0.0.0:80".into(),
        redirect_https: true,
        redirect_to: to.map(Into::into),
        ..Listener::default()
    };
    config.listeners = vec![
        tls.raw(),
        redirect(None).raw(),
        redirect(Some("https://hub.example.org")).raw(),
    ];
    config.upstreams.insert(
        "10_0_0_5_7001".into(),
        RawUpstream {
            servers: vec!["10.0.0.5:7001".into()],
            tls: Some(verify(false)),
            basic_auth: Some(auth(Some("/etc/deskgate.secrets/basic-auth-1"), None)),
            retries: 0,
            balance: None,
            hash_key: None,
            health: None,
        },
    );
    let headers = BTreeMap::from([
        (
            "X-API-Key".to_string(),
            header_ref("X-API-Key: env:HUB_API_KEY").unwrap().1,
        ),
        (
            "X-Other".to_string(),
            header_ref("X-Other: file:/run/key").unwrap().1,
        ),
    ]);
    config.routes = vec![
        route(
            Some("desktop-{name}.hub.example.org"),
            RawUpstreamRef::Resolve(RawResolver {
                resolve: "http://127.0.0.1:5020/api/target/{name}".into(),
                headers,
                cache: None,
                tls: Some(verify(true)),
                basic_auth: Some(auth(None, Some("DESKGATE_BASIC_AUTH_2"))),
            }),
            Some(RawRewriteLocation::One("http://127.0.0.1:3000/".into())),
        ),
        route(
            None,
            RawUpstreamRef::Name("10_0_0_5_7001".into()),
            Some(RawRewriteLocation::Many(vec![
                "http://a:1/".into(),
                "http://b:2/".into(),
            ])),
        ),
    ];
    config.timeouts.connect = Some(HumanDuration(std::time::Duration::from_secs(5)));
    config.timeouts.read = Some(HumanDuration(std::time::Duration::from_millis(1500)));
    config.timeouts.upgraded_idle = Some(HumanDuration(std::time::Duration::from_secs(3600)));
    config.proxy_headers = Some(RawProxyHeaders {
        x_forwarded: None,
        add: BTreeMap::from([("X-Hub-Edge".into(), "deskgate".into())]),
        remove: vec!["X-User".into(), "true".into()],
    });
    let written = serde_yaml::to_string(&config).unwrap();
    let back: RawConfig =
        serde_yaml::from_str(&written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(serde_yaml::to_string(&back).unwrap(), written);
    // Spot checks on the model read back, and on the forms written.
    assert_eq!(back.listeners.len(), 3);
    let certs = &back.listeners[0].tls.as_ref().unwrap().certs;
    assert!(certs[0].hosts.is_empty() && certs[1].hosts == ["*.www.example.org"]);
    assert!(back.listeners[1].redirect_https && back.listeners[1].redirect_to.is_none());
    assert_eq!(
        back.listeners[2].redirect_to.as_deref(),
        Some("https://hub.example.org")
    );
    assert!(!back.listeners[2].redirect_https);
    let u = &back.upstreams["10_0_0_5_7001"];
    assert!(!u.tls.as_ref().unwrap().verify);
    assert!(u.basic_auth.as_ref().unwrap().password_file.is_some());
    let Some(RawUpstreamRef::Resolve(r)) = &back.routes[0].upstream else {
        panic!("{written}")
    };
    assert_eq!(r.headers["X-API-Key"].env.as_deref(), Some("HUB_API_KEY"));
    assert!(r.headers["X-Other"].file.is_some() && r.tls.as_ref().unwrap().verify);
    assert_eq!(
        r.basic_auth.as_ref().unwrap().password_env.as_deref(),
        Some("DESKGATE_BASIC_AUTH_2")
    );
    assert!(
        matches!(back.routes[1].rewrite_location, Some(RawRewriteLocation::Many(ref m)) if m.len() == 2)
    );
    assert!(back.routes[1].strip_prefix && back.routes[1].fallback.is_some());
    assert_eq!(
        back.timeouts.read.unwrap().0,
        std::time::Duration::from_millis(1500)
    );
    assert!(
        written.contains("connect: 5s\n") && written.contains("read: 1500ms\n"),
        "{written}"
    );
    assert_eq!(
        back.proxy_headers.as_ref().unwrap().remove,
        ["X-User", "true"]
    );
    // Unset options are not written.
    for absent in [
        "retries",
        "novnc",
        "block",
        "cache",
        "sni",
        "admin",
        "websocket",
        "x_forwarded",
    ] {
        assert!(
            !written.contains(&format!("{absent}:")),
            "{absent} in {written}"
        );
    }
}

//! ACME against a real ACME server: Debian's `pebble` (and BIND for DNS-01), all on loopback.
//! Pebble resolves every name through a BIND started here (`* A 127.0.0.1` in `hub.test`),
//! validates HTTP-01 and TLS-ALPN-01 on deskgate's own ports, and DNS-01 through the TXT
//! records deskgate writes into BIND with TSIG-signed RFC 2136 updates.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// BIND, authoritative for `hub.test` (every name -> 127.0.0.1), accepting updates signed
/// with the key in `key_file`.
struct Bind {
    _named: Killed,
    port: u16,
    key_file: PathBuf,
}

impl Bind {
    fn start(dir: &Path) -> Bind {
        require("named");
        let dir = dir.join("bind");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD
            .encode(deskgate::support::secret::random_hex(32));
        let key_file = dir.join("deskgate-acme.key");
        std::fs::write(
            &key_file,
            format!(
                "key \"deskgate-acme\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{secret}\";\n}};\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("hub.test.zone"),
            "$TTL 60\n@ IN SOA ns.hub.test. admin.hub.test. 1 60 60 600 60\n@ IN NS ns.hub.test.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n",
        )
        .unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                r#"include "{d}/deskgate-acme.key";
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
}};
controls {{ }};
zone "hub.test" {{ type primary; file "{d}/hub.test.zone"; allow-update {{ key "deskgate-acme"; }}; }};
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("named.log")).unwrap();
        let named = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.join("named.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let named = Killed(named);
        wait_port(port);
        Bind {
            _named: named,
            port,
            key_file,
        }
    }
}

/// Pebble with its own HTTPS certificate (from a CA made here), validating on the given
/// ports and resolving names through `dns_port`.
struct Pebble {
    child: Option<Killed>,
    dir: PathBuf,
    pub port: u16,
    mgmt: u16,
    /// The CA of pebble's own HTTPS (what deskgate's `directory_ca` trusts).
    pub api_ca: PathBuf,
}

impl Pebble {
    fn start(dir: &Path, http_port: u16, tls_port: u16, dns_port: u16) -> Pebble {
        require("pebble");
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let api_ca = dir.join("api-ca.pem");
        std::fs::write(&api_ca, ca.pem()).unwrap();
        std::fs::write(dir.join("api.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
        let (port, mgmt) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("api.pem"),
            "privateKey": dir.join("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let mut p = Pebble {
            child: None,
            dir,
            port,
            mgmt,
            api_ca,
        };
        p.run(dns_port);
        p
    }

    fn run(&mut self, dns_port: u16) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("pebble.log"))
            .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // No random sleeps before validation, no random nonce rejections.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(Killed(child));
        wait_port(self.port);
        wait_port(self.mgmt);
    }

    fn stop(&mut self) {
        self.child = None;
    }

    fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root that signs issued certificates (new with every pebble start).
    fn issuing_root(&self) -> String {
        let r = curl(
            &format!("https://127.0.0.1:{}/roots/0", self.mgmt),
            &["--cacert", self.api_ca.to_str().unwrap()],
        );
        assert_eq!(r.status, 200, "pebble roots: {r:?}");
        r.body
    }
}

/// The leaf certificate deskgate serves for `sni`, verified against `root_pem`.
async fn verified_leaf(port: u16, sni: &str, root_pem: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut root_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].to_vec())
}

/// Polls until deskgate serves a certificate for `sni` that chains to `root`.
async fn wait_for_certificate(port: u16, sni: &str, root: &str, deskgate: &Deskgate) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match verified_leaf(port, sni, root).await {
            Ok(leaf) => return leaf,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no verified certificate for {sni} after 60 s: {e}\n{}",
                deskgate.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn acme_yaml(
    fx: &Fixture,
    plain: Option<u16>,
    tls_port: u16,
    admin_port: u16,
    acme: &str,
    desktop: std::net::SocketAddr,
) -> String {
    let plain = plain.map_or(String::new(), |p| {
        format!("  - {{ addr: \"127.0.0.1:{p}\", redirect_https: true }}\n")
    });
    format!(
        "listeners:\n{plain}  - addr: \"127.0.0.1:{tls_port}\"\n    tls:\n      acme: {acme}\nupstreams:\n{}routes:\n  - {{ path: \"/\", upstream: desktop-alice }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", open: true }}\n",
        fx.desktop_upstream("desktop-alice", desktop),
    )
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn http01_certificate_by_sni_renewed_under_an_open_websocket() {
    let fx = Fixture::new();
    let bind = Bind::start(fx.path());
    let (plain, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(fx.path(), plain, tls_port, bind.port);
    let storage = fx.path().join("acme");
    let acme = format!(
        "{{ directory: \"{}\", directory_ca: \"{}\", email: ops@hub.test, hosts: [desk.hub.test], storage: \"{}\", challenge: http-01, renew_after: 4s }}",
        pebble.directory(),
        pebble.api_ca.display(),
        storage.display()
    );
    let yaml = acme_yaml(
        &fx,
        Some(plain),
        tls_port,
        admin_port,
        &acme,
        fx.desktop("alice"),
    );
    let edge = Deskgate::start(fx.path(), "edge", &yaml, tls_port);
    let root = pebble.issuing_root();
    let first = wait_for_certificate(tls_port, "desk.hub.test", &root, &edge).await;

    // Stored privately: key, certificate, account.
    for f in [
        "desk.hub.test/key.pem",
        "desk.hub.test/cert.pem",
        "account.json",
    ] {
        assert_eq!(mode_of(&storage.join(f)), 0o600, "{f}");
    }
    let m = curl(&format!("http://127.0.0.1:{admin_port}/metrics"), &[]).body;
    let expiry = m
        .lines()
        .find_map(|l| {
            l.strip_prefix("deskgate_certificate_expiry_seconds{host=\"desk.hub.test\"} ")
        })
        .and_then(|v| v.parse::<i64>().ok())
        .expect("expiry metric");
    assert!(expiry > 86400, "{expiry}");

    // A WebSocket opened on the first certificate stays up across the renewal.
    let (mut ws, _) = ws_connect(&format!("wss://desk.hub.test:{tls_port}/websockify"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "a renewal", || {
        metric(admin_port, "deskgate_certificates_issued_total") >= 2
    });
    let second = wait_for_certificate(tls_port, "desk.hub.test", &root, &edge).await;
    assert_ne!(
        first, second,
        "the renewed certificate is served to new handshakes"
    );
    assert_eq!(ask(&mut ws, "after renewal").await, "after renewal");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_alpn01_certificate_on_the_tls_listener_alone() {
    let fx = Fixture::new();
    let bind = Bind::start(fx.path());
    let (tls_port, admin_port) = (free_port(), free_port());
    let pebble = Pebble::start(fx.path(), free_port(), tls_port, bind.port);
    let acme = format!(
        "{{ directory: \"{}\", directory_ca: \"{}\", hosts: [alpn.hub.test], storage: \"{}\", challenge: tls-alpn-01 }}",
        pebble.directory(),
        pebble.api_ca.display(),
        fx.path().join("acme").display()
    );
    let yaml = acme_yaml(&fx, None, tls_port, admin_port, &acme, fx.desktop("alice"));
    let edge = Deskgate::start(fx.path(), "edge", &yaml, tls_port);
    let root = pebble.issuing_root();
    wait_for_certificate(tls_port, "alpn.hub.test", &root, &edge).await;
    // Browsers still get h2 / http/1.1 (acme-tls/1 is offered last).
    let r = curl(
        &format!("https://alpn.hub.test:{tls_port}/whoami"),
        &["--http2"],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dns01_wildcard_through_rfc2136_updates_to_bind() {
    let fx = Fixture::new();
    let bind = Bind::start(fx.path());
    let (tls_port, admin_port) = (free_port(), free_port());
    let pebble = Pebble::start(fx.path(), free_port(), free_port(), bind.port);
    let acme = format!(
        "{{ directory: \"{}\", directory_ca: \"{}\", hosts: [\"*.hub.test\", hub.test], storage: \"{}\", challenge: dns-01, dns01: {{ rfc2136: {{ server: \"127.0.0.1:{}\", zone: hub.test, tsig_key_file: \"{}\" }} }} }}",
        pebble.directory(),
        pebble.api_ca.display(),
        fx.path().join("acme").display(),
        bind.port,
        bind.key_file.display()
    );
    let yaml = acme_yaml(&fx, None, tls_port, admin_port, &acme, fx.desktop("alice"));
    let edge = Deskgate::start(fx.path(), "edge", &yaml, tls_port);
    let root = pebble.issuing_root();
    let wildcard = wait_for_certificate(tls_port, "desktop-alice.hub.test", &root, &edge).await;
    let apex = wait_for_certificate(tls_port, "hub.test", &root, &edge).await;
    assert_eq!(
        wildcard, apex,
        "one certificate for *.hub.test and hub.test"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_down_keeps_the_current_certificate_and_retries_until_it_returns() {
    let fx = Fixture::new();
    let bind = Bind::start(fx.path());
    let (plain, tls_port, admin_port) = (free_port(), free_port(), free_port());
    let mut pebble = Pebble::start(fx.path(), plain, tls_port, bind.port);
    let acme = format!(
        "{{ directory: \"{}\", directory_ca: \"{}\", hosts: [desk.hub.test], storage: \"{}\", renew_after: 2s }}",
        pebble.directory(),
        pebble.api_ca.display(),
        fx.path().join("acme").display()
    );
    let yaml = acme_yaml(
        &fx,
        Some(plain),
        tls_port,
        admin_port,
        &acme,
        fx.desktop("alice"),
    );
    let edge = Deskgate::start(fx.path(), "edge", &yaml, tls_port);
    let first_root = pebble.issuing_root();
    let current = wait_for_certificate(tls_port, "desk.hub.test", &first_root, &edge).await;

    pebble.stop();
    wait_until(Duration::from_secs(60), "a failed renewal", || {
        metric(admin_port, "deskgate_acme_failures_total") >= 1
    });
    let still = verified_leaf(tls_port, "desk.hub.test", &first_root)
        .await
        .expect("the current certificate keeps serving while the CA is down");
    assert_eq!(still, current);

    // The CA returns (a fresh pebble: new account, new root); the retry succeeds.
    let issued_before = metric(admin_port, "deskgate_certificates_issued_total");
    pebble.run(bind.port);
    let new_root = pebble.issuing_root();
    wait_until(
        Duration::from_secs(90),
        "issuance after the CA returned",
        || metric(admin_port, "deskgate_certificates_issued_total") > issued_before,
    );
    wait_for_certificate(tls_port, "desk.hub.test", &new_root, &edge).await;
}

#[test]
fn config_check_explains_acme_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("acme.yaml");
    std::fs::write(
        &conf,
        "listeners:\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      acme:\n        directory: \"ftp://ca\"\n        hosts: [\"*.hub.test\"]\n        storage: /var/lib/deskgate/acme\n        challenge: dns-02\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["-t", "-c"])
        .arg(&conf)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "acme.yaml:5:20: expected an http:// or https:// URL",
        "acme.yaml:8:20: expected http-01, tls-alpn-01 or dns-01, found `dns-02`",
        "acme.yaml:6:17: `*.hub.test` is a wildcard: CAs issue those only through `challenge: dns-01`",
    ] {
        assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
    }
}

/// A TLS listener whose certificate is still pending refuses every handshake: counted by
/// reason, logged once (not once per handshake), and the ACME failure says what went wrong
/// and where.
#[test]
fn a_listener_waiting_for_its_certificate_stays_quiet() {
    let fx = Fixture::new();
    let (tls_port, admin_port) = (free_port(), free_port());
    // Nothing listens here: the CA's connection is refused.
    let directory = format!("https://127.0.0.1:{}/dir", free_port());
    let storage = fx.path().join("acme");
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{tls_port}\"\n    tls:\n      acme: {{ directory: \"{directory}\", hosts: [hub.test], storage: \"{}\", challenge: tls-alpn-01 }}\nupstreams:\n  hub:\n    servers: [\"127.0.0.1:1\"]\nroutes:\n  - {{ path: \"/\", upstream: hub }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", open: true }}\n",
        storage.display()
    );
    let edge = Deskgate::start(fx.path(), "pending", &yaml, tls_port);
    wait_port(admin_port);
    for _ in 0..20 {
        let r = curl(&format!("https://hub.test:{tls_port}/"), &[]);
        assert_eq!(r.status, 0, "no certificate yet, so no HTTP answer");
    }
    assert_eq!(
        metric(
            admin_port,
            "deskgate_tls_handshake_failures_total{reason=\"no_certificate\"}"
        ),
        20
    );
    wait_until(
        Duration::from_secs(30),
        "the ACME failure is logged",
        || edge.log_text().contains("acme hub.test"),
    );
    let log = edge.log_text();
    // (The readiness probe's bare TCP connection is a `closed` line of its own.)
    let refused = log
        .lines()
        .filter(|l| l.contains("TLS handshake refused") && l.contains("no_certificate"))
        .count();
    assert_eq!(refused, 1, "one line for 20 refusals:\n{log}");
    assert!(!log.contains("Downstream handshake error"), "{log}");
    assert!(
        log.contains("no_certificate: this listener has no certificate"),
        "{log}"
    );
    let acme_line = log
        .lines()
        .find(|l| l.contains("acme hub.test: creating an account"))
        .unwrap();
    assert!(
        acme_line.contains("the connection to the directory was refused")
            && acme_line.contains(&directory),
        "{acme_line}"
    );
}

/// A directory served with a certificate deskgate does not trust: the log says which setting
/// fixes it, instead of `client error (Connect)`.
#[test]
fn an_untrusted_directory_is_named_with_its_fix() {
    let fx = Fixture::new();
    let (tls_port, admin_port) = (free_port(), free_port());
    // The test desktop speaks HTTPS with a self-signed certificate.
    let directory = format!("https://127.0.0.1:{}/dir", fx.desktop("ca").port());
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{tls_port}\"\n    tls:\n      acme: {{ directory: \"{directory}\", hosts: [hub.test], storage: \"{}\", challenge: tls-alpn-01 }}\nupstreams:\n  hub:\n    servers: [\"127.0.0.1:1\"]\nroutes:\n  - {{ path: \"/\", upstream: hub }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", open: true }}\n",
        fx.path().join("acme").display()
    );
    let edge = Deskgate::start(fx.path(), "untrusted", &yaml, tls_port);
    wait_until(
        Duration::from_secs(30),
        "the ACME failure is logged",
        || {
            edge.log_text()
                .contains("acme hub.test: creating an account")
        },
    );
    let log = edge.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("acme hub.test: creating an account"))
        .unwrap();
    assert!(
        line.contains("is not trusted: set `directory_ca:`") && line.contains(&directory),
        "{line}"
    );
}

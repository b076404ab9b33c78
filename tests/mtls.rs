//! Mutual TLS: listeners and the admin listener that verify client certificates against a CA
//! (the subject reaching upstreams and the access log), upstreams reached with a client
//! certificate and verified against a private CA, and a plain HTTP request on a TLS port.

mod common;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A private CA and certificates it signed, written as PEM files.
struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    alice: (PathBuf, PathBuf),
    /// Signed by another CA: a stranger's certificate.
    mallory: (PathBuf, PathBuf),
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(
    dir: &Path,
    file: &str,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    (issuer, issuer_key): &(rcgen::Certificate, KeyPair),
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hub");
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer, issuer_key).unwrap();
    let (c, k) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn pki(dir: &Path) -> Pki {
    let root = ca("hub internal CA");
    let other = ca("someone else's CA");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, root.0.pem()).unwrap();
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    Pki {
        ca: ca_file,
        server: leaf(
            dir,
            "server",
            "hub.test",
            &["hub.test", "127.0.0.1"],
            ServerAuth,
            &root,
        ),
        alice: leaf(dir, "alice", "alice", &[], ClientAuth, &root),
        mallory: leaf(dir, "mallory", "mallory", &[], ClientAuth, &other),
    }
}

fn with_cert((cert, key): &(PathBuf, PathBuf)) -> [String; 4] {
    [
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

fn get(url: &str, extra: &[String]) -> CurlResponse {
    let args: Vec<&str> = extra.iter().map(String::as_str).collect();
    curl(url, &args)
}

#[test]
fn listeners_require_or_accept_client_certificates_and_pass_the_subject() {
    let fx = Fixture::new();
    let p = pki(fx.path());
    let desktop = fx.desktop("alice");
    let (required, optional, admin_port) = (free_port(), free_port(), free_port());
    let access_log = fx.path().join("access.log");
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{required}\"\n    tls:\n      certs: [{{ cert: \"{sc}\", key: \"{sk}\" }}]\n      client_ca: \"{ca}\"\n  - addr: \"127.0.0.1:{optional}\"\n    tls:\n      certs: [{{ cert: \"{sc}\", key: \"{sk}\" }}]\n      client_ca: \"{ca}\"\n      client_auth: optional\nupstreams:\n{up}routes:\n  - {{ path: /desktop/alice/, upstream: alice, strip_prefix: true }}\nadmin:\n  addr: \"127.0.0.1:{admin_port}\"\n  open: true\n  tls: {{ cert: \"{sc}\", key: \"{sk}\", client_ca: \"{ca}\", client_auth: required }}\nlog:\n  access: {{ format: json, path: \"{log}\" }}\n",
        sc = p.server.0.display(),
        sk = p.server.1.display(),
        ca = p.ca.display(),
        up = fx.desktop_upstream("alice", desktop),
        log = access_log.display(),
    );
    let _edge = Deskgate::start(fx.path(), "mtls", &yaml, required);
    let headers = |port: u16, extra: &[String]| {
        get(
            &format!("https://hub.test:{port}/desktop/alice/headers"),
            extra,
        )
    };
    // Required: alice's certificate passes, and her subject reaches the desktop; a header of
    // that name from the client is replaced, never passed.
    let mut alice = with_cert(&p.alice).to_vec();
    alice.extend(["-H".into(), "X-Client-Cert-Subject: CN=admin".into()]);
    let r = headers(required, &alice);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.body.to_ascii_lowercase();
    assert!(
        body.contains("x-client-cert-subject: cn=alice, o=hub"),
        "{}",
        r.body
    );
    assert!(!body.contains("cn=admin"), "{}", r.body);
    // No certificate, or a stranger's: no handshake, no answer.
    assert_eq!(headers(required, &[]).status, 0);
    assert_eq!(headers(required, &with_cert(&p.mallory)).status, 0);
    // Optional: served without a certificate, with no subject; a stranger's is still refused.
    let r = headers(optional, &[]);
    assert_eq!(r.status, 200);
    assert!(
        !r.body
            .to_ascii_lowercase()
            .contains("x-client-cert-subject"),
        "{}",
        r.body
    );
    assert_eq!(headers(optional, &with_cert(&p.mallory)).status, 0);
    // The admin API over HTTPS, for alice's certificate only.
    wait_port(admin_port);
    let routes =
        |extra: &[String]| get(&format!("https://127.0.0.1:{admin_port}/api/routes"), extra);
    assert_eq!(routes(&with_cert(&p.alice)).status, 200);
    assert_eq!(routes(&[]).status, 0);
    // The access log names the verified subject.
    wait_until(
        std::time::Duration::from_secs(10),
        "the access log is written",
        || std::fs::read_to_string(&access_log).is_ok_and(|t| t.contains("client_subject")),
    );
    let log = std::fs::read_to_string(&access_log).unwrap();
    assert!(
        log.contains(r#""client_subject":"CN=alice, O=hub""#),
        "{log}"
    );
}

#[test]
fn upstreams_get_a_client_certificate_and_are_verified_against_a_private_ca() {
    let fx = Fixture::new();
    let p = pki(fx.path());
    let desktop = fx.desktop("alice");
    // The inner edge stands for an internal_ssl single-user server: it serves only clients
    // with a certificate from the CA, with a certificate from the same CA.
    let inner = free_port();
    let inner_yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{inner}\"\n    tls:\n      certs: [{{ cert: \"{}\", key: \"{}\" }}]\n      client_ca: \"{}\"\nupstreams:\n{}routes:\n  - {{ path: /, upstream: alice }}\n",
        p.server.0.display(),
        p.server.1.display(),
        p.ca.display(),
        fx.desktop_upstream("alice", desktop),
    );
    let _inner = Deskgate::start(fx.path(), "inner", &inner_yaml, inner);
    let outer = free_port();
    let upstream = |name: &str, tls: &str| {
        format!("  {name}:\n    servers: [\"127.0.0.1:{inner}\"]\n    tls: {tls}\n")
    };
    let outer_yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{outer}\"\nupstreams:\n{}{}{}routes:\n  - {{ path: /with-cert/, upstream: mutual, strip_prefix: true }}\n  - {{ path: /without-cert/, upstream: anonymous, strip_prefix: true }}\n  - {{ path: /public-roots/, upstream: public, strip_prefix: true }}\n",
        upstream(
            "mutual",
            &format!(
                "{{ sni: hub.test, ca: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
                p.ca.display(),
                p.alice.0.display(),
                p.alice.1.display()
            )
        ),
        upstream("anonymous", &format!("{{ sni: hub.test, ca: \"{}\" }}", p.ca.display())),
        upstream(
            "public",
            &format!(
                "{{ sni: hub.test, client_cert: \"{}\", client_key: \"{}\" }}",
                p.alice.0.display(),
                p.alice.1.display()
            )
        ),
    );
    let _outer = Deskgate::start(fx.path(), "outer", &outer_yaml, outer);
    let via = |path: &str| curl(&format!("http://127.0.0.1:{outer}{path}"), &[]);
    let r = via("/with-cert/headers");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("x-client-cert-subject: cn=alice, o=hub"),
        "{}",
        r.body
    );
    // Without a client certificate the inner edge refuses the handshake.
    assert_eq!(via("/without-cert/whoami").status, 502);
    // With the system's roots the private CA's certificate is not trusted.
    assert_eq!(via("/public-roots/whoami").status, 502);
}

#[test]
fn plain_http_on_a_tls_port_gets_a_readable_400() {
    let fx = Fixture::new();
    let port = free_port();
    let yaml = format!(
        "listeners:\n{}upstreams:\n  hub:\n    servers: [\"127.0.0.1:1\"]\nroutes:\n  - {{ path: /, upstream: hub }}\n",
        fx.tls_listener(port)
    );
    let _edge = Deskgate::start(fx.path(), "plain-on-tls", &yaml, port);
    let r = curl(&format!("http://hub.test:{port}/"), &[]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("this port speaks HTTPS"), "{}", r.body);
    // And TLS still works on the same port.
    assert_eq!(curl(&format!("https://hub.test:{port}/"), &[]).status, 502);
}

#[test]
fn bad_mutual_tls_settings_are_named() {
    let fx = Fixture::new();
    let conf = fx.path().join("bad.yaml");
    std::fs::write(
        &conf,
        "listeners:\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      certs: [{ cert: a.pem, key: a.key }]\n      client_auth: sometimes\nupstreams:\n  u:\n    servers: [\"127.0.0.1:1\"]\n    tls: { client_cert: c.pem }\nroutes:\n  - { path: /, upstream: u }\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["-t", "--skip-files", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(":5:20: expected `required` or `optional`, found `sometimes`"),
        "{err}"
    );
    assert!(
        err.contains(":9:5: give both `client_cert` and `client_key`"),
        "{err}"
    );
}

//! Log lines any client can cause are counted, not written one per connection
//! (`telemetry::log_noise`).

mod common;
use common::*;
use std::process::{Command, Stdio};

/// rustls writes a WARN for every ClientHello whose server name is an IP address (wrk sends
/// one; 2,000 connections wrote 2,000 lines): 50 such handshakes give at most one line, and
/// all 50 are counted.
#[test]
fn fifty_handshakes_with_an_ip_address_as_sni_log_one_line() {
    require("openssl");
    let fx = Fixture::new();
    let (port, admin_port) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\nupstreams:\n{}routes:\n  - path: /\n    upstream: hub\n",
        fx.tls_listener(port),
        fx.desktop_upstream("hub", fx.desktop("hub")),
    );
    let edge = Deskgate::start_with_admin(fx.path(), "edge", &yaml, port, admin_port);
    for i in 0..50 {
        // OpenSSL sends what -servername says, an IP address included (as wrk does).
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "127.0.0.1"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Cipher is") || text.contains("Cipher    :"),
            "handshake {i} did not complete: {text}"
        );
    }
    let log = edge.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("IP address")).collect();
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        !lines[0].contains("WARN"),
        "a client's mistake is no warning: {}",
        lines[0]
    );
    let metrics = metrics_text(admin_port);
    let counted = metric_value(&metrics, "deskgate_tls_bad_sni_total{kind=\"ip_address\"}")
        .unwrap_or_else(|| panic!("no ip_address count in:\n{metrics}"));
    assert_eq!(counted, 50.0);
}

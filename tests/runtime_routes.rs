//! Runtime routes (the admin API) in front of the configured ones: a runtime route wins at
//! equal host and path, deleting it uncovers the configured route again, a reload rebuilds the
//! configured table and keeps the runtime routes, and the state file (written off the request
//! path) holds what was acknowledged once deskgate stops. src/routing/runtime.rs, the
//! snapshot's runtime tier; src/hub/runtime_routes.rs, the state file's writer.

mod common;

use common::*;
use std::time::Duration;

fn call(admin_port: u16, method: &str, prefix: &str, target: Option<&str>) -> u16 {
    let body = target.map(|t| format!(r#"{{"target": "https://{t}"}}"#));
    admin(
        admin_port,
        method,
        &format!("/api/routes{prefix}"),
        body.as_deref(),
        Some(ADMIN_TOKEN),
    )
    .status
}

/// An edge whose config routes `/desktop/alice/` to bob (plus `extra` routes), with a state
/// file and runtime routes to desktops like the hub's.
fn config(fx: &Fixture, https_port: u16, admin_port: u16, bob: &str, extra: &str) -> String {
    format!(
        "listeners:\n{tls}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\n\
         state_file: \"{state}\"\n\
         timeouts: {{ drain: 1s }}\n\
         dynamic:\n  tls: {{ verify: false }}\n  strip_prefix: true\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{pw}\" }}\n\
         upstreams:\n{bob}\
         routes:\n  - path: \"/desktop/alice/\"\n    strip_prefix: true\n    upstream: bob\n{extra}",
        tls = fx.tls_listener(https_port),
        state = fx.path().join("routes.json").display(),
        pw = fx.password_file.display(),
    )
}

#[test]
fn runtime_routes_sit_in_front_of_configured_ones_through_reload_and_restart() {
    let fx = Fixture::new();
    let alice = fx.desktop("alice").to_string();
    let bob_addr = fx.desktop("bob");
    let bob = fx.desktop_upstream("bob", bob_addr);
    let (https_port, admin_port) = (free_port(), free_port());
    let yaml = config(&fx, https_port, admin_port, &bob, "");
    let d = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    let edge = Edge {
        d,
        admin: admin_port,
    };
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("bob"));

    // Same path as the configured route: the hub's registration wins, as in CHP.
    assert_eq!(
        call(admin_port, "POST", "/desktop/alice", Some(&alice)),
        201
    );
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("alice"));

    // A reload rebuilds the configured table (a new route) and keeps the runtime one in front.
    let reloaded = config(
        &fx,
        https_port,
        admin_port,
        &bob,
        "  - path: \"/gen2/\"\n    strip_prefix: true\n    upstream: bob\n",
    );
    std::fs::write(fx.path().join("edge.yaml"), reloaded).unwrap();
    signal(edge.d.pid(), "HUP");
    wait_until(Duration::from_secs(20), "the reload to apply", || {
        metric(admin_port, "deskgate_reloads_total") == 1
    });
    assert_eq!(served(&edge, "/gen2").as_deref(), Some("bob"));
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("alice"));

    // Deleting it uncovers the configured route.
    assert_eq!(call(admin_port, "DELETE", "/desktop/alice", None), 204);
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("bob"));

    // Two adds in a row, then a graceful stop: whatever the writer had not written yet is
    // written at exit, so both come back after the restart.
    assert_eq!(
        call(admin_port, "POST", "/desktop/carol", Some(&alice)),
        201
    );
    assert_eq!(call(admin_port, "POST", "/desktop/dave", Some(&alice)), 201);
    let Edge { mut d, .. } = edge;
    signal(d.pid(), "TERM");
    wait_until(Duration::from_secs(30), "deskgate to exit", || {
        !d.is_running()
    });
    drop(d);
    let d = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    let edge = Edge {
        d,
        admin: admin_port,
    };
    assert_eq!(served(&edge, "/desktop/carol").as_deref(), Some("alice"));
    assert_eq!(served(&edge, "/desktop/dave").as_deref(), Some("alice"));
    assert_eq!(served(&edge, "/desktop/alice").as_deref(), Some("bob"));
}

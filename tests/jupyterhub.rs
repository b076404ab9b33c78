//! JupyterHub's own `ConfigurableHTTPProxy` client (pip package `jupyterhub`) drives the
//! routes API: a real client nobody here wrote.

mod common;
use common::*;

#[test]
fn jupyterhub_proxy_client_adds_lists_and_deletes_routes() {
    let fx = Fixture::new();
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = format!(
        "listeners:\n{}admin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\ndynamic:\n  tls: {{ verify: false }}\n  strip_prefix: true\n  basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
        fx.tls_listener(https_port),
        fx.password_file.display()
    );
    let _edge = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    let api = format!("http://127.0.0.1:{admin_port}");

    jupyterhub(
        &api,
        &[
            "add",
            "/desktop/alice/",
            &format!("https://{alice}"),
            r#"{"user": "alice"}"#,
        ],
    );
    let r = curl(
        &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
        &[],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "alice\n"));

    let routes = jupyterhub(&api, &["get_all"]);
    let route = &routes["/desktop/alice/"];
    assert_eq!(route["target"], format!("https://{alice}"));
    assert_eq!(route["data"]["user"], "alice");
    assert!(route["data"]["last_activity"].is_string(), "{routes}");

    jupyterhub(&api, &["delete", "/desktop/alice/"]);
    assert_eq!(jupyterhub(&api, &["get_all"]), serde_json::json!({}));
    assert_eq!(
        curl(
            &format!("https://hub.test:{https_port}/desktop/alice/whoami"),
            &[]
        )
        .status,
        404
    );
}

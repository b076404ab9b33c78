use super::*;

fn load_result(yaml: &str) -> Result<Config, Vec<ConfigError>> {
    load_str(
        "t.yaml",
        yaml,
        LoadOptions {
            skip_files: true,
            ..LoadOptions::default()
        },
    )
}

fn errors(yaml: &str) -> Vec<String> {
    match load_result(yaml) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

/// A config that must load.
fn load(yaml: &str) -> Config {
    load_result(yaml).unwrap_or_else(|e| panic!("{}", e[0]))
}

const BASE: &str = "listeners:\n  - addr: \"127.0.0.1:8080\"\nupstreams:\n  hub:\n    servers: [\"127.0.0.1:5020\"]\n";

#[test]
fn minimal_is_ok() {
    assert!(errors(&format!("{BASE}routes:\n  - path: /\n    upstream: hub\n")).is_empty());
}

#[test]
fn work_stealing_defaults_to_pingoras_and_can_be_turned_off() {
    let route = "routes:\n  - path: /\n    upstream: hub\n";
    assert!(load(&format!("{BASE}{route}")).work_stealing);
    assert!(!load(&format!("{BASE}{route}work_stealing: false\n")).work_stealing);
    let e = errors(&format!("{BASE}{route}work_stealing: sometimes\n"));
    assert!(e[0].contains("t.yaml:"), "{e:?}");
}

#[test]
fn unknown_key_has_position() {
    let e = errors(&format!("{BASE}routes:\n  - path: /\n    upstrem: hub\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.yaml:8:5: "), "{e:?}");
    assert!(e[0].contains("unknown field `upstrem`"), "{e:?}");
}

#[test]
fn unknown_upstream_points_at_value() {
    let e = errors(&format!("{BASE}routes:\n  - path: /\n    upstream: nope\n"));
    assert!(e[0].starts_with("t.yaml:8:15: "), "{e:?}");
    assert!(e[0].contains("`nope`"), "{e:?}");
}

#[test]
fn duplicate_route() {
    let e = errors(&format!(
        "{BASE}routes:\n  - path: /\n    upstream: hub\n  - path: /\n    upstream: hub\n"
    ));
    assert!(e[0].starts_with("t.yaml:9:5: duplicate route"), "{e:?}");
}

#[test]
fn bad_duration() {
    let e = errors(&format!("{BASE}timeouts:\n  connect: 3 parsecs\n"));
    assert!(
        e[0].starts_with("t.yaml:7:3: ") && e[0].contains("parsecs"),
        "{e:?}"
    );
}

#[test]
fn template_capture_must_exist() {
    let e = errors(&format!(
        "{BASE}routes:\n  - path: /desktop/{{user}}/\n    upstream: \"desktop-{{name}}\"\n"
    ));
    assert!(e[0].contains("`{name}`"), "{e:?}");
}

#[test]
fn hsts_preload_needs_subdomains_and_a_year() {
    let tls = "listeners:\n  - addr: \"127.0.0.1:8443\"\n    tls:\n      certs: [{ cert: a.pem, key: a.key }]\n      hsts: ";
    let e = errors(&format!("{tls}{{ max_age: 30d, preload: true }}\n"));
    assert!(
        e[0].contains("`preload: true` needs `include_subdomains: true`"),
        "{e:?}"
    );
    assert!(e[0].starts_with("t.yaml:5:"), "{e:?}");
    assert!(errors(&format!(
        "{tls}{{ max_age: 365d, include_subdomains: true, preload: true }}\n"
    ))
    .is_empty());
    let e = errors(&format!("{tls}{{ max_age: soon }}\n"));
    assert!(e[0].contains("soon"), "{e:?}");
}

#[test]
fn route_store_sentinel() {
    let ok = format!(
        "{BASE}route_store:\n  sentinel:\n    master: hub\n    addrs: [\"10.0.0.5:26379\", \"[::1]:26380\"]\n"
    );
    assert!(errors(&ok).is_empty(), "{:?}", errors(&ok));
    let e = errors(&format!(
        "{BASE}route_store:\n  sentinel:\n    master: hub\n    addrs: [\"10.0.0.5:26379\", \"sentinel-b\"]\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("t.yaml:9:31: "), "{e:?}");
    assert!(e[0].contains("`sentinel-b`"), "{e:?}");
    let e = errors(&format!(
        "{BASE}route_store:\n  redis: redis://127.0.0.1/0\n  sentinel: {{ master: hub, addrs: [\"a:1\"] }}\n"
    ));
    assert!(
        e[0].starts_with("t.yaml:8:3: ") && e[0].contains("not both"),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}route_store:\n  key_prefix: x\n"));
    assert!(
        e[0].starts_with("t.yaml:6:") && e[0].contains("sentinel:"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{BASE}route_store:\n  sentinel: {{ master: hub, addrs: [\"a:1\"], password_env: A, password_file: /b }}\n"
    ));
    assert!(
        e[0].starts_with("t.yaml:7:") && e[0].contains("not both"),
        "{e:?}"
    );
}

#[test]
fn websocket_close_on_desktop_loss_defaults_and_overrides() {
    let routes = "routes:\n  - path: /a/\n    upstream: hub\n  - path: /b/\n    upstream: hub\n    websocket: { close_on_desktop_loss: 4000 }\n";
    let c = load(&format!("{BASE}{routes}"));
    assert_eq!(c.routes[0].websocket.close_on_desktop_loss, Some(1011));
    assert_eq!(c.routes[1].websocket.close_on_desktop_loss, Some(4000));
    assert_eq!(c.dynamic.websocket.close_on_desktop_loss, Some(1011));
    let c = load(&format!(
        "{BASE}websocket:\n  close_on_desktop_loss: none\n{routes}"
    ));
    assert_eq!(c.routes[0].websocket.close_on_desktop_loss, None);
    assert_eq!(c.routes[1].websocket.close_on_desktop_loss, Some(4000));
    assert_eq!(c.dynamic.websocket.close_on_desktop_loss, None);
}

#[test]
fn websocket_close_code_must_be_one_a_server_sends() {
    let e = errors(&format!(
        "{BASE}routes:\n  - path: /\n    upstream: hub\n    websocket: {{ close_on_desktop_loss: 1006 }}\n"
    ));
    assert!(e[0].starts_with("t.yaml:9:41: "), "{e:?}");
    assert!(e[0].contains("found `1006`"), "{e:?}");
    let e = errors(&format!(
        "{BASE}websocket:\n  close_on_desktop_loss: never\n"
    ));
    assert!(
        e[0].starts_with("t.yaml:7:26: ") && e[0].contains("`none`"),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}websocket:\n  close_on_loss: 1011\n"));
    assert!(
        e[0].starts_with("t.yaml:7:3: ") && e[0].contains("unknown field"),
        "{e:?}"
    );
}

#[test]
fn websocket_max_rate_defaults_and_overrides() {
    const MIB: u64 = 1024 * 1024;
    let routes = "routes:\n  - path: /a/\n    upstream: hub\n  - path: /b/\n    upstream: hub\n    websocket: { max_rate: 20Mbit/s }\n  - path: /c/\n    upstream: hub\n    websocket: { max_rate: none }\n  - path: /d/\n    upstream: hub\n    websocket: { burst: 64KiB }\n";
    // No cap anywhere unless configured.
    let c = load(&format!("{BASE}{routes}").replace("    websocket: { burst: 64KiB }\n", ""));
    assert_eq!(c.routes[0].websocket.max_rate, None);
    assert_eq!(c.dynamic.websocket.max_rate, None);
    let c = load(&format!(
        "{BASE}websocket: {{ max_rate: 8MiB/s, burst: 1MiB }}\n{routes}"
    ));
    let cap = |i: usize| {
        c.routes[i]
            .websocket
            .max_rate
            .map(|r| (r.bytes_per_sec, r.burst))
    };
    assert_eq!(cap(0), Some((8 * MIB, MIB)));
    // Its own rate, and the default burst for it (an eighth of a second).
    assert_eq!(cap(1), Some((2_500_000, 312_500)));
    assert_eq!(cap(2), None);
    assert_eq!(cap(3), Some((8 * MIB, 64 * 1024)));
    // Runtime routes take the top level's.
    assert_eq!(
        c.dynamic.websocket.max_rate.map(|r| r.bytes_per_sec),
        Some(8 * MIB)
    );
    // The close code of the same block is unaffected.
    assert_eq!(c.routes[1].websocket.close_on_desktop_loss, Some(1011));
}

#[test]
fn websocket_max_rate_and_burst_errors_have_positions() {
    let e = errors(&format!(
        "{BASE}routes:\n  - path: /\n    upstream: hub\n    websocket: {{ max_rate: 8MiB }}\n"
    ));
    assert!(e[0].starts_with("t.yaml:9:28: "), "{e:?}");
    assert!(
        e[0].contains("expected a rate such as `8MiB/s`") && e[0].contains("`8MiB`"),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}websocket:\n  max_rate: 0\n"));
    assert!(
        e[0].starts_with("t.yaml:7:13: ") && e[0].contains("above 0"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{BASE}websocket:\n  max_rate: 1MiB/s\n  burst: lots\n"
    ));
    assert!(
        e[0].starts_with("t.yaml:8:10: ") && e[0].contains("`lots`"),
        "{e:?}"
    );
    let e = errors(&format!("{BASE}websocket:\n  burst: 1MiB\n"));
    assert!(
        e[0].starts_with("t.yaml:7:10: ") && e[0].contains("needs a `max_rate`"),
        "{e:?}"
    );
}

#[test]
fn checked_values_keep_their_typed_error_as_cause() {
    let yaml = format!(
        "{BASE}routes:\n  - path: /\n    upstream: hub\n    rewrite_location: \"mailto:x\"\n    websocket: {{ max_rate: fast }}\n"
    );
    let Err(errors) = load_result(&yaml) else {
        panic!("the config loaded");
    };
    let cause = |i: usize| {
        std::error::Error::source(&errors[i]).unwrap_or_else(|| panic!("no cause: {}", errors[i]))
    };
    assert!(
        cause(0).downcast_ref::<LocationError>().is_some(),
        "{}",
        errors[0]
    );
    assert!(
        cause(1).downcast_ref::<size::SizeError>().is_some(),
        "{}",
        errors[1]
    );
    // The words are the typed error's own.
    assert_eq!(errors[1].message, cause(1).to_string());
}

//! Monitoring files operators load as they are: the alert rules pass promtool and their unit
//! tests, and a real Prometheus scraping a running deskgate finds every metric the Grafana
//! dashboard and the rules query.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Families only present with ACME certificates or a Redis route store configured.
const CONDITIONAL: [&str; 2] = [
    "deskgate_certificate_expiry_seconds",
    "deskgate_route_store_up",
];

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("deskgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

fn queried_metrics() -> BTreeSet<String> {
    let dashboard =
        std::fs::read_to_string(format!("{ROOT}/deploy/grafana/deskgate.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut exprs = String::new();
    for panel in parsed["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let rules = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/deskgate.rules.yml"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:") || l.starts_with("          "))
        .collect::<Vec<_>>()
        .join("\n");
    let mut names = metric_names(&exprs);
    names.extend(metric_names(&rules));
    // Descriptions name metrics too; only queried ones count, but all must exist.
    names
}

#[test]
fn alert_rules_check_and_pass_their_unit_tests() {
    require("promtool");
    let dir = format!("{ROOT}/deploy/prometheus");
    for args in [
        ["check", "rules", "deskgate.rules.yml"],
        ["test", "rules", "deskgate.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool {}: {text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "{text}");
    }
}

#[test]
fn prometheus_scrapes_every_metric_the_dashboard_and_rules_query() {
    require("prometheus");
    let fx = Fixture::new();
    let (port, metrics_port) = (free_port(), free_port());
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:{port}\"\n    max_connections: 100\n\
         metrics:\n  addr: \"127.0.0.1:{metrics_port}\"\n\
         upstreams:\n  hub:\n    servers: [\"127.0.0.1:{}\"]\n\
         routes:\n  - path: /\n    upstream: hub\n",
        free_port()
    );
    let _edge = Deskgate::start(fx.path(), "edge", &yaml, port);
    wait_port(metrics_port);
    // One request, so the upstream counters have moved once (a refused upstream: 502).
    curl(&format!("http://127.0.0.1:{port}/"), &[]);

    let exposed = curl(&format!("http://127.0.0.1:{metrics_port}/metrics"), &[]).body;
    let exposed_names = metric_names(&exposed);
    let queried = queried_metrics();
    let declared = std::fs::read_to_string(format!("{ROOT}/src/telemetry/metrics.rs")).unwrap();
    for name in &queried {
        if CONDITIONAL.contains(&name.as_str()) {
            assert!(
                declared.contains(&format!("\"{name}\"")),
                "{name} is not a deskgate metric"
            );
        } else {
            assert!(
                exposed_names.contains(name),
                "the dashboard or rules query {name}, which deskgate does not expose:\n{exposed}"
            );
        }
    }

    // A real Prometheus scrapes it, and each family answers a query.
    let prom_port = free_port();
    let config = fx.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: deskgate\n    static_configs: [{{ targets: [\"127.0.0.1:{metrics_port}\"] }}]\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(fx.path().join("prometheus.log")).unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                fx.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_port(prom_port);
    let query = |q: &str| -> serde_json::Value {
        let body = curl(
            &format!("http://127.0.0.1:{prom_port}/api/v1/query"),
            &["-G", "--data-urlencode", &format!("query={q}")],
        )
        .body;
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    };
    wait_until(
        Duration::from_secs(60),
        "Prometheus scrapes deskgate",
        || {
            query("up{job=\"deskgate\"} == 1")["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
    for name in queried
        .iter()
        .filter(|n| !CONDITIONAL.contains(&n.as_str()))
    {
        let result = query(name);
        assert!(
            result["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "Prometheus has no {name}: {result}"
        );
    }
}

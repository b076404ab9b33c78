//! `deskgate chp`: runs as configurable-http-proxy (the flags and the config they become are
//! `hub::chp`'s): logs to stdout, seeds `--default-target`, and removes the pid file on
//! SIGTERM/SIGINT.

use crate::config::LoadOptions;
use crate::hub::chp;
use crate::runtime;
use std::process::ExitCode;

/// Exit 2 for what the hub got wrong (flags, the config they make), 1 when serving fails.
pub fn run(flags: Vec<String>) -> ExitCode {
    let args = chp::parse(flags);
    let level = match args.log_level() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("deskgate chp: {e}");
            return ExitCode::from(2);
        }
    };
    // Before `plan`, which logs the flags it ignores.
    let logger = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .target(env_logger::Target::Stdout)
        .build();
    let _ = crate::telemetry::log_noise::install(logger);
    let plan = match chp::plan(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("deskgate chp: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match runtime::assemble(plan.config, LoadOptions::default()) {
        Ok(r) => r,
        Err(errors) => {
            for e in errors {
                eprintln!("deskgate chp: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let built = match super::build(&runtime, Default::default()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("deskgate chp: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(target) = &plan.default_target {
        let mut data = serde_json::Map::new();
        data.insert("target".into(), serde_json::Value::String(target.clone()));
        if let Err(e) = built.runtime_routes.add("/", data) {
            eprintln!("deskgate chp: --default-target {target}: {e:?}");
            return ExitCode::from(2);
        }
    }
    log::info!(
        "Proxying {} to {}",
        runtime.config.listeners[0].addr,
        plan.default_target.as_deref().unwrap_or("(no default)")
    );
    built.server.run(pingora::server::RunArgs::default());
    super::write_pending_routes(&built.runtime_routes);
    if let Some(pid_file) = &plan.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    ExitCode::SUCCESS
}

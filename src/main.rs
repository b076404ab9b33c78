//! deskgate command line: check a config, run it, or run the embedded demo.

use clap::{Parser, Subcommand};
use deskgate::config::LoadOptions;
use deskgate::runtime;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "deskgate",
    version,
    about = "A YAML-routed Pingora edge for remote desktops (noVNC/KasmVNC over WSS)"
)]
struct Cli {
    /// Config file (YAML)
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// Only check the config: prints `FILE: ok` or `FILE:LINE:COL: problem` lines
    #[arg(short = 't', long = "test")]
    test: bool,
    /// With -t: do not read certificates or secret files (check syntax and references only)
    #[arg(long)]
    skip_files: bool,
    /// Take over the listening sockets of a running deskgate (zero-downtime binary upgrade)
    #[arg(short = 'u', long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// configurable-http-proxy's command line (`deskgate chp --help`): a drop-in proxy for
    /// JupyterHub and hubs built like it
    Chp {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        flags: Vec<String>,
    },
    /// Re-read the config of a running deskgate (sends SIGHUP via its pid file)
    Reload,
    /// Convert another server's configuration to deskgate YAML
    Import {
        #[command(subcommand)]
        from: deskgate::import::cli::ImportFrom,
    },
    /// Run only the demo's KasmVNC-like desktop (HTTPS + WSS, self-signed, optional Basic auth):
    /// an upstream to try deskgate, its tests and benchmarks against
    DesktopSim {
        #[arg(long, default_value = "127.0.0.1:7001")]
        listen: String,
        #[arg(long, default_value = "demo")]
        name: String,
        /// `user:password` to demand in Basic auth (default: none)
        #[arg(long)]
        credentials: Option<String>,
        /// Certificate and key (PEM); generated when not given
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Serve noVNC's files from DIR and speak VNC on /websockify (a live picture)
        #[arg(long)]
        novnc: Option<PathBuf>,
    },
    /// Run on an embedded demo: generated certificates, a KasmVNC-like desktop, routes to it
    Demo {
        /// Plain-HTTP listener (redirects to HTTPS)
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// TLS listener
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_listen: String,
        /// Admin listener (routes API, metrics, the admin page at /ui/)
        #[arg(long, default_value = "127.0.0.1:8001")]
        admin_listen: String,
        /// noVNC's files (Debian's `novnc` package); `none` shows the WebSocket echo page
        #[arg(long, default_value = "/usr/share/novnc")]
        novnc: String,
    },
}

fn main() -> ExitCode {
    deskgate::tls::install_crypto_provider();
    // configurable-http-proxy's command line: `deskgate chp ...`, or deskgate installed as
    // (or symlinked to) `configurable-http-proxy`.
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    let invoked_as_chp = std::path::Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "configurable-http-proxy");
    if invoked_as_chp {
        return run_chp(args.collect());
    }
    let rest: Vec<String> = args.collect();
    // `configurable-http-proxy` too: compose's `command:` appends to the image's entry point.
    if matches!(
        rest.first().map(String::as_str),
        Some("chp" | "configurable-http-proxy")
    ) {
        return run_chp(rest[1..].to_vec());
    }
    let cli = Cli::parse();
    if let Some(Command::Reload) = &cli.command {
        let Some(path) = &cli.config else {
            eprintln!("deskgate reload: give the running config with -c FILE");
            return ExitCode::from(2);
        };
        return match deskgate::control::reload::signal_running(path) {
            Ok(msg) => {
                println!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("deskgate reload: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Import { from }) = &cli.command {
        return deskgate::import::cli::run(from, runtime::load_str);
    }
    if let Some(Command::DesktopSim {
        listen,
        name,
        credentials,
        cert,
        key,
        novnc,
    }) = &cli.command
    {
        return run_desktop_sim(
            listen,
            name,
            credentials.clone(),
            cert.clone().zip(key.clone()),
            novnc.clone(),
        );
    }
    let runtime = match &cli.command {
        Some(
            Command::Reload
            | Command::DesktopSim { .. }
            | Command::Chp { .. }
            | Command::Import { .. },
        ) => {
            unreachable!("handled above")
        }
        Some(Command::Demo {
            listen,
            tls_listen,
            admin_listen,
            novnc,
        }) => {
            match deskgate::demo::prepare(&deskgate::demo::DemoOptions {
                listen: listen.clone(),
                tls_listen: tls_listen.clone(),
                admin_listen: admin_listen.clone(),
                novnc_dir: (novnc != "none").then(|| PathBuf::from(novnc)),
            }) {
                Ok(demo) => {
                    println!("{}", demo.banner);
                    demo.runtime
                }
                Err(e) => {
                    eprintln!("deskgate demo: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => {
            let Some(path) = &cli.config else {
                eprintln!("deskgate: give a config with -c FILE, or try `deskgate demo`");
                return ExitCode::from(2);
            };
            match runtime::load_file(
                path,
                LoadOptions {
                    skip_files: cli.skip_files,
                    ..LoadOptions::default()
                },
            ) {
                Ok(c) if cli.test => {
                    drop(c);
                    println!("{}: ok", path.display());
                    return ExitCode::SUCCESS;
                }
                Ok(c) => c,
                Err(errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let config = &runtime.config;
    let level = config.log_level.clone().unwrap_or_else(|| "info".into());
    // Behind `log_noise`'s filter: WARN lines any client can cause are counted, not printed.
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).build();
    let _ = deskgate::telemetry::log_noise::install(logger);
    let opt = pingora::server::configuration::Opt {
        upgrade: cli.upgrade,
        ..Default::default()
    };
    match deskgate::server::build(&runtime, opt) {
        Ok(built) => {
            // Demo configs live in memory; only file configs can be reloaded.
            if let (Some(path), None) = (&cli.config, &cli.command) {
                let reloader = std::sync::Arc::new(deskgate::control::reload::Reloader {
                    path: path.clone(),
                    gateway: built.gateway.clone(),
                    runtime_routes: built.runtime_routes.clone(),
                    listener_addrs: config.listeners.iter().map(|l| l.addr.clone()).collect(),
                });
                if let Err(e) = reloader.listen_for_sighup() {
                    eprintln!("deskgate: cannot handle SIGHUP: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let pid_file = deskgate::control::reload::pid_file_for(config);
            built.server.run(pingora::server::RunArgs::default());
            deskgate::control::reload::remove_pid_file_if_ours(&pid_file);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deskgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs as configurable-http-proxy: logs to stdout, seeds `--default-target`, and removes the
/// pid file on SIGTERM/SIGINT.
fn run_chp(flags: Vec<String>) -> ExitCode {
    let args = deskgate::hub::chp::parse(flags);
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
    let _ = deskgate::telemetry::log_noise::install(logger);
    let plan = match deskgate::hub::chp::plan(args) {
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
    let built = match deskgate::server::build(&runtime, Default::default()) {
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
    if let Some(pid_file) = &plan.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    ExitCode::SUCCESS
}

fn run_desktop_sim(
    listen: &str,
    name: &str,
    credentials: Option<String>,
    files: Option<(PathBuf, PathBuf)>,
    novnc: Option<PathBuf>,
) -> ExitCode {
    let (cert, key) = match files {
        Some(f) => f,
        None => {
            let dir = std::env::temp_dir().join(format!("deskgate-desktop-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            match deskgate::tls::write_self_signed(&dir, "desktop", &["kasm", "localhost"]) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("deskgate desktop-sim: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut sim = deskgate::demo::desktop::DesktopSim::new(name, credentials);
    sim.novnc_dir = novnc;
    match deskgate::demo::desktop::spawn(sim, listen, &cert, &key) {
        Ok(addr) => {
            println!("desktop {name} listening on https://{addr}");
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("deskgate desktop-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

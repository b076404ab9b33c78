//! deskgate's command line, the table of contents of start-up: parse it, then hand over to
//! the module that runs the subcommand (no subcommand: serve or check a config file).

use clap::{Parser, Subcommand};
use deskgate::{control, demo, hub, import, runtime, server};
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
    #[command(flatten)]
    serve: server::ServeArgs,
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
        from: import::cli::ImportFrom,
    },
    /// Run only the demo's KasmVNC-like desktop (HTTPS + WSS, self-signed, optional Basic auth):
    /// an upstream to try deskgate, its tests and benchmarks against
    DesktopSim(demo::desktop::SimArgs),
    /// Run on an embedded demo: generated certificates, a KasmVNC-like desktop, routes to it
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    deskgate::tls::install_crypto_provider();
    if let Some(flags) = hub::chp::flags_when_run_as_chp(std::env::args()) {
        return server::chp::run(flags);
    }
    let cli = Cli::parse();
    match cli.command {
        None => server::run(&cli.serve),
        Some(Command::Chp { flags }) => server::chp::run(flags),
        Some(Command::Reload) => control::reload::run(cli.serve.config.as_deref()),
        // The generated YAML is checked as `deskgate -t` would (`runtime` is above `import`).
        Some(Command::Import { from }) => import::cli::run(&from, runtime::load_str),
        Some(Command::DesktopSim(args)) => demo::desktop::run(&args),
        Some(Command::Demo(args)) => demo::run(&args, cli.serve.upgrade),
    }
}

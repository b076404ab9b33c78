//! deskgate's command line, the table of contents of start-up: parse it, then hand over to
//! the module that runs the subcommand (no subcommand: serve or check a config file).

use clap::{Parser, Subcommand};
use deskgate::config::LoadOptions;
use deskgate::{control, demo, hub, runtime, server};
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
        from: ImportFrom,
    },
    /// Run only the demo's KasmVNC-like desktop (HTTPS + WSS, self-signed, optional Basic auth):
    /// an upstream to try deskgate, its tests and benchmarks against
    DesktopSim(demo::desktop::SimArgs),
    /// Run on an embedded demo: generated certificates, a KasmVNC-like desktop, routes to it
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum ImportFrom {
    /// Apache 2.4 vhosts: ProxyPass, RewriteRule [P] with RewriteMap prg:, SSL*, RequestHeader.
    /// Exit 1: the files do not parse (nothing written); 2: written, but directives that change
    /// routing or security were not translated (see the comments; --allow-partial: 0)
    Apache {
        /// Apache configuration files (Include and IncludeOptional are followed)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the YAML here (default: standard output); secrets go to FILE.secrets/
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Exit 0 even when something that changes routing or security was not translated
        #[arg(long)]
        allow_partial: bool,
        /// The hub URL a `RewriteMap prg:` lookup becomes, with `{name}` for the desktop
        #[arg(long)]
        resolver_url: Option<String>,
        /// A header for that URL: 'X-API-Key: env:HUB_API_KEY' or 'NAME: file:/path'
        #[arg(long)]
        resolver_header: Vec<String>,
    },
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
        Some(Command::Import {
            from:
                ImportFrom::Apache {
                    files,
                    output,
                    allow_partial,
                    resolver_url,
                    resolver_header,
                },
        }) => {
            let opts = deskgate::import::apache::ImportOptions {
                resolver_url,
                resolver_headers: resolver_header,
                secrets_dir: output.as_ref().map(|o| o.with_extension("secrets")),
            };
            run_import(&files, output.as_deref(), allow_partial, &opts)
        }
        Some(Command::DesktopSim(args)) => demo::desktop::run(&args),
        Some(Command::Demo(args)) => demo::run(&args, cli.serve.upgrade),
    }
}

/// `deskgate import apache`: converts, checks the result like `deskgate -t --skip-files`,
/// then writes it (and the secrets moved out of the Apache files, 0600).
fn run_import(
    files: &[PathBuf],
    output: Option<&std::path::Path>,
    allow_partial: bool,
    opts: &deskgate::import::apache::ImportOptions,
) -> ExitCode {
    let conversion = match deskgate::import::apache::convert(files, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let name = output.map_or("<import>".to_string(), |o| o.display().to_string());
    let check = LoadOptions {
        skip_files: true,
        skip_secrets: true,
    };
    if let Err(errors) = runtime::load_str(&name, &conversion.yaml, check) {
        eprintln!("deskgate import: the generated config does not validate (an importer bug; nothing written):");
        for e in errors {
            eprintln!("  {e}");
        }
        eprintln!("{}", conversion.yaml);
        return ExitCode::from(1);
    }
    for (path, secret) in &conversion.secret_files {
        if let Err(e) = write_secret(path, secret) {
            eprintln!("deskgate import: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    match output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &conversion.yaml) {
                eprintln!("deskgate import: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            eprintln!("deskgate import: wrote {}", path.display());
        }
        None => print!("{}", conversion.yaml),
    }
    if !conversion.ignored.is_empty() {
        eprintln!(
            "not translated, no routing effect: {}",
            conversion.ignored.join("; ")
        );
    }
    for n in &conversion.notices {
        eprintln!("to do: {n}");
    }
    for s in &conversion.skipped {
        eprintln!("NOT TRANSLATED: {s}");
    }
    if conversion.skipped.is_empty() || allow_partial {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "deskgate import: {} directive(s) that change routing or security were not translated (exit 2; --allow-partial accepts that)",
            conversion.skipped.len()
        );
        ExitCode::from(2)
    }
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())
}

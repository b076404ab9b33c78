//! `deskgate import ...` on the command line: the arguments, then convert, check, write.
//!
//! The check of the generated YAML is handed in by the caller (`main.rs` passes the runtime's
//! `load_str`, what `deskgate -t --skip-files` runs): `runtime` sits above `import` in the layers.

use super::apache::{self, ImportOptions};
use crate::config::{ConfigError, LoadOptions};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ImportFrom {
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

/// Converts, checks the result with `check` (as `deskgate -t --skip-files` would), then writes
/// it and the secrets moved out of the Apache files (0600).
pub fn run<T>(
    from: &ImportFrom,
    load: impl Fn(&str, &str, LoadOptions) -> Result<T, Vec<ConfigError>>,
) -> ExitCode {
    let check = |name: &str, yaml: &str| {
        let opts = LoadOptions {
            skip_files: true,
            skip_secrets: true,
        };
        load(name, yaml, opts).map(drop)
    };
    let ImportFrom::Apache {
        files,
        output,
        allow_partial,
        resolver_url,
        resolver_header,
    } = from;
    let opts = ImportOptions {
        resolver_url: resolver_url.clone(),
        resolver_headers: resolver_header.clone(),
        // Absolute: the YAML's password_file must not depend on where deskgate is started.
        secrets_dir: output
            .as_ref()
            .map(|o| std::path::absolute(o).unwrap_or_else(|_| o.clone()))
            .map(|o| o.with_extension("secrets")),
    };
    run_apache(files, output.as_deref(), *allow_partial, &opts, check)
}

fn run_apache(
    files: &[PathBuf],
    output: Option<&Path>,
    allow_partial: bool,
    opts: &ImportOptions,
    check: impl Fn(&str, &str) -> Result<(), Vec<ConfigError>>,
) -> ExitCode {
    let conversion = match apache::convert(files, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let name = output.map_or("<import>".to_string(), |o| o.display().to_string());
    if let Err(errors) = check(&name, &conversion.yaml) {
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
    for n in &conversion.notes {
        eprintln!("note: {n}");
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

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
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

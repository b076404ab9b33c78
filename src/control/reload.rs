//! Reload on SIGHUP (or `deskgate reload -c FILE`): re-read the config and certificates and
//! swap routes, upstreams and certificates atomically. In-flight requests and open WebSockets
//! keep what they started with. A bad config is logged with FILE:LINE:COL, counted in
//! `deskgate_reload_failures_total`, and the old config keeps serving.
//!
//! Listening addresses, the admin listener and the access log are fixed at start; changing
//! them takes a restart or a zero-downtime binary upgrade (`-u`).

use crate::config::{self, ConfigError, ConfigErrors, LoadOptions};
use crate::edge::gateway::Gateway;
use crate::hub::runtime_routes::RuntimeRoutes;
use crate::runtime;
use crate::telemetry::metrics;
use crate::tls::CertSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Reloader {
    pub path: PathBuf,
    pub gateway: Arc<Gateway>,
    pub runtime_routes: Arc<RuntimeRoutes>,
    pub listener_addrs: Vec<String>,
}

impl Reloader {
    pub fn reload(&self) -> Result<u64, Vec<ConfigError>> {
        let runtime = runtime::load_file(&self.path, LoadOptions::default())?;
        let config = &runtime.config;
        let addrs: Vec<String> = config.listeners.iter().map(|l| l.addr.clone()).collect();
        if addrs != self.listener_addrs {
            log::warn!("reload: listener changes ({:?} -> {addrs:?}) take effect after a restart or upgrade; routes and certificates are reloaded now", self.listener_addrs);
        }
        for (l, listener_tls) in config.listeners.iter().zip(&runtime.listener_tls) {
            if let (Some(listener_tls), Some((_, resolver))) = (
                listener_tls,
                self.gateway
                    .cert_resolvers
                    .iter()
                    .find(|(a, _)| *a == l.addr),
            ) {
                resolver.swap(CertSet::new(&listener_tls.certificates));
            }
        }
        self.gateway.apply(runtime.edge);
        self.runtime_routes.set_dynamic(runtime.dynamic);
        Ok(self.gateway.generation())
    }

    fn reload_and_log(&self) {
        match self.reload() {
            Ok(generation) => {
                metrics::RELOADS_OK.inc();
                log::info!(
                    "reload: {} applied (generation {generation})",
                    self.path.display()
                );
            }
            Err(errors) => {
                metrics::RELOADS_FAILED.inc();
                for e in &errors {
                    log::error!("reload rejected, old config keeps serving: {e}");
                }
            }
        }
    }

    /// Handles SIGHUP on a thread of its own from now on.
    pub fn listen_for_sighup(self: Arc<Self>) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        std::thread::Builder::new()
            .name("reload".into())
            .spawn(move || {
                for _ in signals.forever() {
                    self.reload_and_log();
                }
            })?;
        Ok(())
    }
}

/// `deskgate reload -c FILE`: exit 2 without a config, 1 when it does not check or the
/// running deskgate cannot be signalled.
pub fn run(config_path: Option<&Path>) -> std::process::ExitCode {
    let Some(path) = config_path else {
        eprintln!("deskgate reload: give the running config with -c FILE");
        return std::process::ExitCode::from(2);
    };
    match signal_running(path) {
        Ok(pid) => {
            println!("sent SIGHUP to deskgate (pid {pid})");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deskgate reload: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Why `deskgate reload` signalled no process.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("cannot read pid file {}: {source} (is deskgate running?)", path.display())]
    ReadPidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pid file {} does not hold a pid", path.display())]
    NotAPid {
        path: PathBuf,
        source: std::num::ParseIntError,
    },
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
}

/// `deskgate reload -c FILE`: checks FILE, then signals the process in its pid file; the pid
/// signalled.
pub fn signal_running(config_path: &Path) -> Result<i32, ReloadError> {
    let runtime = runtime::load_file(config_path, LoadOptions::default()).map_err(ConfigErrors)?;
    let pid_file = pid_file_for(&runtime.config);
    let text = std::fs::read_to_string(&pid_file).map_err(|source| ReloadError::ReadPidFile {
        path: pid_file.clone(),
        source,
    })?;
    let pid: i32 = text.trim().parse().map_err(|source| ReloadError::NotAPid {
        path: pid_file.clone(),
        source,
    })?;
    // SAFETY: kill(2) with a pid read from our own pid file and a valid signal number.
    let rc = unsafe { libc_kill(pid, signal_hook::consts::SIGHUP) };
    if rc != 0 {
        return Err(ReloadError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(pid)
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// After a shutdown (SIGTERM, SIGINT): the pid file goes, unless a newer deskgate that took
/// over the sockets (`-u`, SIGQUIT) already wrote its own there.
pub fn remove_pid_file_if_ours(path: &std::path::Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// The pid file: `pid_file:` from the config, else one per first listener in the temp dir.
pub fn pid_file_for(config: &config::Config) -> PathBuf {
    config.pid_file.clone().unwrap_or_else(|| {
        let port = config
            .listeners
            .first()
            .and_then(|l| l.addr.rsplit(':').next())
            .unwrap_or("0")
            .replace('/', "_");
        std::env::temp_dir().join(format!("deskgate-{port}.pid"))
    })
}

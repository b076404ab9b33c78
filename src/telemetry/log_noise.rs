//! Log records any client can cause, counted and kept out of the WARN level.
//!
//! The logger is wrapped (`install`) so records from libraries deskgate does not change pass
//! through here first; everything else goes to `env_logger` untouched, at the cost of one
//! level comparison per record.
//!
//! - rustls writes a WARN for every ClientHello whose server name (SNI) is an IP address
//!   (RFC 6066 forbids it; wrk and other tools send it anyway) or not a valid host name: a
//!   client could fill the log with them, one line per connection. Counted in
//!   `deskgate_tls_bad_sni_total{kind}`, logged at INFO at most once a minute per kind with
//!   how many went unlogged (as `edge::handshake_failures` does for failed handshakes).
//! - Pingora writes `WARN TLS shutdown failed, Broken pipe` when the close_notify of a
//!   connection whose peer already left cannot be written. Nothing is lost (the peer is gone):
//!   counted in `deskgate_tls_shutdown_peer_gone_total` and logged at DEBUG.

use crate::telemetry::metrics;
use log::{Level, Log, Metadata, Record};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(60);

/// Kinds of odd server names, with their metric label and what the log line says.
const SNI_KINDS: [(&str, &str, &str); 3] = [
    (
        "Illegal SNI extension: ignoring IP address",
        "ip_address",
        "a client sent an IP address as its TLS server name (SNI), which is ignored",
    ),
    (
        "Illegal SNI hostname received",
        "invalid_name",
        "a client sent a TLS server name (SNI) that is no valid host name",
    ),
    (
        "Illegal SNI extension: duplicate",
        "duplicate",
        "a client sent two TLS server names (SNI): its handshake was refused",
    ),
];

/// Per SNI kind: when it was last logged, and how many since.
static SNI_LOGGED: Mutex<[Option<(Instant, u64)>; 3]> = Mutex::new([None; 3]);

/// Whether an I/O error says the peer already closed its connection.
pub fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof
    )
}

/// A close_notify (or FIN) could not be written to a peer that had already gone.
pub fn count_shutdown_to_gone_peer() {
    metrics::TLS_SHUTDOWN_PEER_GONE.inc();
}

/// Installs `logger` as the process's logger behind the filter. Fails if a logger is set.
pub fn install(logger: env_logger::Logger) -> Result<(), log::SetLoggerError> {
    let max = logger.filter();
    log::set_boxed_logger(Box::new(Quiet { inner: logger }))?;
    log::set_max_level(max);
    Ok(())
}

/// The filter in front of another logger.
pub struct Quiet<L> {
    pub inner: L,
}

impl<L: Log> Log for Quiet<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if record.level() == Level::Warn {
            let target = record.target();
            if target.starts_with("rustls") {
                if let Some(i) = sni_kind(record) {
                    return self.bad_sni(i, record);
                }
            } else if target.starts_with("pingora_core") && is_shutdown_to_gone_peer(record) {
                count_shutdown_to_gone_peer();
                return self.inner.log(
                    &Record::builder()
                        .level(Level::Debug)
                        .target(target)
                        .args(format_args!(
                            "{} (the peer had already closed its connection; counted in deskgate_tls_shutdown_peer_gone_total)",
                            record.args()
                        ))
                        .build(),
                );
            }
        }
        self.inner.log(record)
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

impl<L: Log> Quiet<L> {
    fn bad_sni(&self, kind: usize, record: &Record) {
        let (_, label, meaning) = SNI_KINDS[kind];
        metrics::count_bad_sni(label);
        let now = Instant::now();
        let unlogged = {
            let mut logged = SNI_LOGGED.lock().unwrap_or_else(|e| e.into_inner());
            match &mut logged[kind] {
                Some((at, count)) if now.duration_since(*at) < INTERVAL => {
                    *count += 1;
                    return;
                }
                Some((at, count)) => {
                    *at = now;
                    std::mem::take(count)
                }
                slot @ None => {
                    *slot = Some((now, 0));
                    0
                }
            }
        };
        let more = if unlogged > 0 {
            format!(" ({unlogged} more since the last such line)")
        } else {
            String::new()
        };
        self.inner.log(
            &Record::builder()
                .level(Level::Info)
                .target(record.target())
                .args(format_args!(
                    "{meaning} (rustls: {}){more}; logged at most once a minute, counted in deskgate_tls_bad_sni_total{{kind=\"{label}\"}}",
                    record.args()
                ))
                .build(),
        );
    }
}

fn sni_kind(record: &Record) -> Option<usize> {
    let text = message(record);
    SNI_KINDS
        .iter()
        .position(|(prefix, _, _)| text.starts_with(prefix))
}

fn is_shutdown_to_gone_peer(record: &Record) -> bool {
    let text = message(record).to_ascii_lowercase();
    let gone = ["broken pipe", "connection reset", "not connected"];
    text.starts_with("tls shutdown failed") && gone.iter().any(|g| text.contains(g))
}

/// A record's text (WARN records of two libraries only: never on the request path).
fn message(record: &Record) -> std::borrow::Cow<'static, str> {
    match record.args().as_str() {
        Some(s) => s.into(),
        None => record.args().to_string().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Level, String)>>);

    impl Log for Recorder {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, r: &Record) {
            self.0
                .lock()
                .unwrap()
                .push((r.level(), r.args().to_string()));
        }
        fn flush(&self) {}
    }

    fn warn(quiet: &Quiet<Recorder>, target: &str, text: std::fmt::Arguments) {
        quiet.log(
            &Record::builder()
                .level(Level::Warn)
                .target(target)
                .args(text)
                .build(),
        );
    }

    #[test]
    fn ip_sni_warnings_become_one_line_a_minute_and_shutdown_pipes_debug() {
        let quiet = Quiet {
            inner: Recorder::default(),
        };
        for _ in 0..50 {
            warn(
                &quiet,
                "rustls::msgs::handshake",
                format_args!(
                    "Illegal SNI extension: ignoring IP address presented as hostname ({:?})",
                    "127.0.0.1"
                ),
            );
        }
        warn(
            &quiet,
            "pingora_core::protocols::tls::rustls::server",
            format_args!(
                "TLS shutdown failed, {}",
                std::io::Error::from(std::io::ErrorKind::BrokenPipe)
            ),
        );
        warn(
            &quiet,
            "deskgate::edge::tunnel",
            format_args!("desktop gone"),
        );
        let seen = quiet.inner.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0].0, Level::Info);
        assert!(seen[0].1.contains("IP address"), "{seen:?}");
        assert_eq!(seen[1].0, Level::Debug);
        assert!(
            seen[1].1.starts_with("TLS shutdown failed, broken pipe"),
            "{seen:?}"
        );
        assert_eq!(seen[2], (Level::Warn, "desktop gone".to_string()));
    }
}

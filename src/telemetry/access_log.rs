//! Access log: one line per request, and one per WebSocket when it closes, in `combined` or
//! `json`. Lines go through a channel to a writer thread, so the request path never blocks on
//! the disk. Secrets stay out: no Authorization or Cookie, and query values of keys that look
//! like credentials (noVNC's `password=`) are replaced by `***`.

use once_cell::sync::OnceCell;
use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Combined,
    Json,
}

pub struct AccessLog {
    format: Format,
    tx: SyncSender<String>,
}

static LOG: OnceCell<AccessLog> = OnceCell::new();

/// Starts the writer; `path` is `stdout`, `stderr` or a file (appended). Only the first call
/// counts: the log destination is fixed for the life of the process.
pub fn init(format: Format, path: &str) -> std::io::Result<()> {
    let mut out: Box<dyn Write + Send> = match path {
        "stdout" | "-" => Box::new(std::io::stdout()),
        "stderr" => Box::new(std::io::stderr()),
        file => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)?,
        ),
    };
    let (tx, rx) = sync_channel::<String>(65_536);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
            while let Ok(line) = rx.recv() {
                let _ = buf.write_all(line.as_bytes());
                // Drain what is queued, then flush once: batches under load, prompt when idle.
                while let Ok(more) = rx.try_recv() {
                    let _ = buf.write_all(more.as_bytes());
                }
                let _ = buf.flush();
            }
        })?;
    let _ = LOG.set(AccessLog { format, tx });
    Ok(())
}

pub fn enabled() -> bool {
    LOG.get().is_some()
}

pub struct Entry<'a> {
    pub client: String,
    pub method: &'a str,
    pub uri: &'a str,
    pub version: &'static str,
    pub status: u16,
    pub bytes_sent: usize,
    pub referer: &'a str,
    pub user_agent: &'a str,
    pub duration_ms: u128,
    pub route: &'a str,
    pub upstream: &'a str,
    /// `X-Request-Id`, as the client got it (`edge::request_id`).
    pub request_id: &'a str,
    /// Set for WebSockets: bytes client->desktop, desktop->client, and why it ended.
    pub websocket: Option<(u64, u64, &'a str)>,
    /// The subject of the client certificate a listener verified (mutual TLS).
    pub client_subject: Option<&'a str>,
}

/// What deskgate did with a request, for its line (the rest comes from the request).
pub struct Outcome<'a> {
    pub status: u16,
    /// The request target as the client sent it (`-` when it was not kept).
    pub uri: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    pub started: Option<std::time::Instant>,
    /// The subject of the client certificate a listener verified (mutual TLS).
    pub client_subject: Option<&'a str>,
    /// `X-Request-Id`, as the client got it (`edge::request_id`).
    pub request_id: &'a str,
    /// Set for WebSockets: bytes client->desktop, desktop->client, and why it ended.
    pub websocket: Option<(u64, u64, &'a str)>,
}

impl<'a> Entry<'a> {
    /// The line of a request Pingora served: client, request line and headers from `session`.
    pub fn new(session: &'a pingora::proxy::Session, outcome: Outcome<'a>) -> Entry<'a> {
        let req = session.req_header();
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(|| "-".to_string(), |a| a.ip().to_string());
        Entry {
            client_subject: outcome.client_subject,
            client,
            method: req.method.as_str(),
            uri: outcome.uri,
            version: match req.version {
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            status: outcome.status,
            bytes_sent: session.body_bytes_sent(),
            referer: header(http::header::REFERER),
            user_agent: header(http::header::USER_AGENT),
            duration_ms: outcome.started.map_or(0, |t| t.elapsed().as_millis()),
            route: outcome.route,
            upstream: outcome.upstream,
            request_id: outcome.request_id,
            websocket: outcome.websocket,
        }
    }
}

/// The line of a request that outlives its handler (a WebSocket handed to its tunnel): owned
/// copies of what the entry borrowed, recorded when the connection ends.
pub struct PendingEntry {
    client: String,
    method: String,
    uri: String,
    version: &'static str,
    status: u16,
    referer: String,
    user_agent: String,
    route: String,
    upstream: String,
    request_id: String,
    client_subject: Option<String>,
    started: std::time::Instant,
}

impl Entry<'_> {
    pub fn pending(&self, started: Option<std::time::Instant>) -> PendingEntry {
        PendingEntry {
            client: self.client.clone(),
            method: self.method.to_string(),
            uri: self.uri.to_string(),
            version: self.version,
            status: self.status,
            referer: self.referer.to_string(),
            user_agent: self.user_agent.to_string(),
            route: self.route.to_string(),
            upstream: self.upstream.to_string(),
            request_id: self.request_id.to_string(),
            client_subject: self.client_subject.map(str::to_string),
            started: started.unwrap_or_else(std::time::Instant::now),
        }
    }
}

impl PendingEntry {
    /// `websocket`: bytes client->desktop, desktop->client, and why it ended.
    pub fn record(&self, websocket: (u64, u64, &str)) {
        record(&Entry {
            client: self.client.clone(),
            method: &self.method,
            uri: &self.uri,
            version: self.version,
            status: self.status,
            bytes_sent: websocket.1 as usize,
            referer: &self.referer,
            user_agent: &self.user_agent,
            duration_ms: self.started.elapsed().as_millis(),
            route: &self.route,
            upstream: &self.upstream,
            request_id: &self.request_id,
            websocket: Some(websocket),
            client_subject: self.client_subject.as_deref(),
        });
    }
}

pub fn record(e: &Entry<'_>) {
    let Some(log) = LOG.get() else { return };
    let line = match log.format {
        Format::Combined => combined(e),
        Format::Json => json(e),
    };
    // A full queue drops the line rather than slowing requests down.
    if let Err(TrySendError::Full(_)) = log.tx.try_send(line) {
        crate::telemetry::metrics::ACCESS_LOG_DROPPED.inc();
    }
}

fn combined(e: &Entry<'_>) -> String {
    let now = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z");
    let mut line = format!(
        "{} - - [{now}] \"{} {} {}\" {} {} \"{}\" \"{}\" {}ms route=\"{}\" upstream=\"{}\" request_id=\"{}\"",
        e.client,
        e.method,
        redact_query(e.uri),
        e.version,
        e.status,
        e.bytes_sent,
        quote_safe(e.referer),
        quote_safe(e.user_agent),
        e.duration_ms,
        e.route,
        e.upstream,
        e.request_id
    );
    if let Some((up, down, reason)) = e.websocket {
        line.push_str(&format!(
            " ws_bytes_up={up} ws_bytes_down={down} ws_close=\"{reason}\""
        ));
    }
    if let Some(subject) = e.client_subject {
        line.push_str(&format!(" client_subject=\"{}\"", quote_safe(subject)));
    }
    line.push('\n');
    line
}

fn json(e: &Entry<'_>) -> String {
    let mut v = serde_json::json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "client": e.client,
        "method": e.method,
        "uri": redact_query(e.uri),
        "version": e.version,
        "status": e.status,
        "bytes_sent": e.bytes_sent,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "duration_ms": e.duration_ms as u64,
        "route": e.route,
        "upstream": e.upstream,
        "request_id": e.request_id,
    });
    if let Some((up, down, reason)) = e.websocket {
        v["websocket"] = serde_json::json!({ "bytes_up": up, "bytes_down": down, "close": reason });
    }
    if let Some(subject) = e.client_subject {
        v["client_subject"] = serde_json::json!(subject);
    }
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn quote_safe(s: &str) -> String {
    s.replace(['"', '\n', '\r'], "_")
}

const SECRET_KEYS: [&str; 8] = [
    "password", "passwd", "pass", "token", "secret", "key", "api_key", "auth",
];

/// `?password=x&path=y` -> `?password=***&path=y`.
pub fn redact_query(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return quote_safe(uri);
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if SECRET_KEYS
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s)) =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    quote_safe(&format!("{path}?{}", parts.join("&")))
}

#[cfg(test)]
mod tests {
    use super::redact_query;
    #[test]
    fn redacts_credentials_in_queries() {
        assert_eq!(
            redact_query("/vnc.html?autoconnect=1&password=hunter2&path=x"),
            "/vnc.html?autoconnect=1&password=***&path=x"
        );
        assert_eq!(redact_query("/a?X-API-Key=1"), "/a?X-API-Key=***");
        assert_eq!(redact_query("/plain"), "/plain");
    }
}

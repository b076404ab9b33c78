//! A desktop that behaves like a KasmVNC container at the HTTP level: HTTPS and WSS on one
//! port, a self-signed certificate, Basic auth on every request, and a WebSocket that only
//! upgrades with `Origin` and a subprotocol (otherwise 200 HTML, as KasmVNC answers).
//! The demo serves it in-process; the tests use it as their upstream.
//!
//! - `GET /whoami` -> the desktop's name; `GET /headers` -> the request headers it received
//!   (and an `X-Echo` request header sent back as a response header);
//!   `GET /bytes/N` -> N bytes (benchmarks); any other GET -> a small page that opens the
//!   WebSocket and shows the echo.
//! - WebSocket: echoes every message; the text `whoami` is answered with the name, and
//!   `stream COUNT SIZE` with COUNT binary frames of SIZE bytes (a desktop sending screen
//!   updates), `bye` with a close frame and the connection dropped (a desktop shutting down).
//! - With `novnc_dir` (Debian's `novnc` package), it serves noVNC's files as KasmVNC does, and
//!   its `/websockify` WebSocket speaks VNC (`rfb.rs`): noVNC shows a live picture.

use super::DemoError;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub struct DesktopSim {
    pub name: String,
    /// `user:password` expected in Basic auth; None accepts anyone.
    pub credentials: Option<String>,
    /// Test-only "fastest possible upstream": answer `101` for this `Sec-WebSocket-Key` as soon
    /// as TLS is up, before the request arrives. Makes cloudflare/pingora#946's race (101 read
    /// before the request's empty body) happen on most connections instead of a few.
    pub eager_upgrade_key: Option<String>,
    /// WebSocket upgrades this desktop accepted (tests check a denied upgrade never arrives).
    pub upgrades: Arc<std::sync::atomic::AtomicUsize>,
    /// noVNC's files to serve; with them, `/websockify` speaks VNC instead of echoing.
    pub novnc_dir: Option<std::path::PathBuf>,
}

impl DesktopSim {
    pub fn new(name: &str, credentials: Option<String>) -> DesktopSim {
        DesktopSim {
            name: name.to_string(),
            credentials,
            eager_upgrade_key: None,
            upgrades: Default::default(),
            novnc_dir: None,
        }
    }
}

/// `deskgate desktop-sim`'s flags.
#[derive(clap::Args)]
pub struct SimArgs {
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub listen: String,
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// `user:password` to demand in Basic auth (default: none)
    #[arg(long)]
    pub credentials: Option<String>,
    /// Certificate and key (PEM); generated when not given
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Serve noVNC's files from DIR and speak VNC on /websockify (a live picture)
    #[arg(long)]
    pub novnc: Option<PathBuf>,
}

/// `deskgate desktop-sim`: serves one desktop until the process is stopped.
pub fn run(args: &SimArgs) -> ExitCode {
    let (cert, key) = match args.cert.clone().zip(args.key.clone()) {
        Some(files) => files,
        None => {
            let dir = std::env::temp_dir().join(format!("deskgate-desktop-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            match crate::tls::write_self_signed(&dir, "desktop", &["kasm", "localhost"]) {
                Ok(files) => files,
                Err(e) => {
                    eprintln!("deskgate desktop-sim: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mut sim = DesktopSim::new(&args.name, args.credentials.clone());
    sim.novnc_dir = args.novnc.clone();
    match spawn(sim, &args.listen, &cert, &key) {
        Ok(addr) => {
            println!("desktop {} listening on https://{addr}", args.name);
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

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Binds `addr` (port 0 for any) and serves on a thread of its own; returns the bound address.
pub fn spawn(
    desktop: DesktopSim,
    addr: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<SocketAddr, DemoError> {
    // TLS 1.2 lets the eager desktop's 101 ride in the same flight as the server's Finished,
    // so it is already buffered when Pingora's connect returns.
    let acceptor = acceptor(cert, key, desktop.eager_upgrade_key.is_some())?;
    let std_listener = std::net::TcpListener::bind(addr).map_err(|source| DemoError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let serve_error = |source| DemoError::Serve {
        addr: addr.to_string(),
        source,
    };
    std_listener.set_nonblocking(true).map_err(serve_error)?;
    let bound = std_listener.local_addr().map_err(serve_error)?;
    let desktop = Arc::new(desktop);
    std::thread::Builder::new()
        .name(format!("desktop-{}", desktop.name))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                serve(listener, acceptor, desktop).await
            });
        })
        .map_err(serve_error)?;
    Ok(bound)
}

pub fn acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    tls12_only: bool,
) -> Result<TlsAcceptor, DemoError> {
    let ck = crate::tls::load_certified_key(cert, key)?;
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Fixed(ck)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);
impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, desktop: Arc<DesktopSim>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let desktop = desktop.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                let _ = connection(tls, &desktop).await;
            }
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    desktop: &DesktopSim,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    if let Some(key) = &desktop.eager_upgrade_key {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: binary\r\n\r\n",
            derive_accept_key(key.as_bytes())
        );
        stream.write_all(head.as_bytes()).await?;
        stream.flush().await?;
        let Some((_, consumed, _)) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let rest = buf.split_off(consumed);
        let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, None).await;
        return echo(ws, desktop).await;
    }
    loop {
        let Some((req, consumed, body_len)) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        // Bodies are read and dropped; the demo desktop has nothing to post to.
        let mut leftover = buf.split_off(consumed);
        while leftover.len() < body_len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            leftover.extend_from_slice(&chunk[..n]);
        }
        buf = leftover.split_off(body_len);

        if !authorized(&req, desktop) {
            respond(
                &mut stream,
                "401 Unauthorized",
                "text/plain",
                b"authentication required\n",
                &[("WWW-Authenticate", "Basic realm=\"Websockify\"")],
                desktop,
            )
            .await?;
            continue;
        }
        let wants_ws = req.has_token("connection", "upgrade")
            && req
                .header("upgrade")
                .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if wants_ws {
            let path = req.target.split('?').next().unwrap_or("/");
            let vnc = desktop.novnc_dir.is_some() && path.ends_with("/websockify");
            // Stock noVNC (Debian's) offers no subprotocol; KasmVNC's offers `binary`. The VNC
            // endpoint takes either, the echo endpoint insists, as KasmVNC does.
            let protocol = req
                .header("sec-websocket-protocol")
                .and_then(|p| p.split(',').next())
                .map(|p| p.trim().to_string())
                .or_else(|| vnc.then(String::new));
            match (
                req.header("origin"),
                protocol,
                req.header("sec-websocket-key"),
            ) {
                (Some(_), Some(protocol), Some(key)) => {
                    desktop
                        .upgrades
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let accept = derive_accept_key(key.as_bytes());
                    let chosen = if protocol.is_empty() {
                        String::new()
                    } else {
                        format!("Sec-WebSocket-Protocol: {protocol}\r\n")
                    };
                    let mut head = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{chosen}\r\n"
                    )
                    .into_bytes();
                    if path.ends_with("/speaks-first") {
                        // A server that talks first (a VNC server sends its version at once),
                        // in the very write of its 101: a text frame "hello".
                        head.extend_from_slice(&[0x81, 5]);
                        head.extend_from_slice(b"hello");
                    }
                    stream.write_all(&head).await?;
                    stream.flush().await?;
                    let ws = WebSocketStream::from_partially_read(
                        stream,
                        std::mem::take(&mut buf),
                        Role::Server,
                        None,
                    )
                    .await;
                    if vnc {
                        return super::rfb::serve(ws, &desktop.name).await;
                    }
                    return echo(ws, desktop).await;
                }
                // KasmVNC's answer to a handshake without Origin or subprotocol: its HTML page.
                _ => {
                    page(&mut stream, &req, desktop).await?;
                    continue;
                }
            }
        }
        match req.target.split('?').next().unwrap_or("/") {
            "/whoami" => {
                respond(
                    &mut stream,
                    "200 OK",
                    "text/plain",
                    format!("{}\n", desktop.name).as_bytes(),
                    &[],
                    desktop,
                )
                .await?
            }
            p if p.starts_with("/bytes/") => {
                let n = p["/bytes/".len()..]
                    .parse::<usize>()
                    .unwrap_or(0)
                    .min(64 << 20);
                respond(
                    &mut stream,
                    "200 OK",
                    "application/octet-stream",
                    &vec![b'x'; n],
                    &[],
                    desktop,
                )
                .await?
            }
            "/headers" => {
                let text: String = req
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{}: {v}\n", k.to_ascii_lowercase()))
                    .collect();
                let echo: Vec<(&str, &str)> = req
                    .headers
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("x-echo"))
                    .map(|(_, v)| ("X-Echo", v.as_str()))
                    .collect();
                respond(
                    &mut stream,
                    "200 OK",
                    "text/plain",
                    text.as_bytes(),
                    &echo,
                    desktop,
                )
                .await?
            }
            path => match novnc_file(desktop, path) {
                Some((body, ctype)) => {
                    respond(&mut stream, "200 OK", ctype, &body, &[], desktop).await?
                }
                None => page(&mut stream, &req, desktop).await?,
            },
        }
        if req.has_token("connection", "close") {
            return Ok(());
        }
    }
}

/// A file of noVNC's (`/` is `vnc.html`), when the desktop serves noVNC and has it.
fn novnc_file(desktop: &DesktopSim, path: &str) -> Option<(Vec<u8>, &'static str)> {
    let dir = desktop.novnc_dir.as_ref()?;
    let rel = match path.trim_start_matches('/') {
        "" | "index.html" => "vnc.html",
        p => p,
    };
    if rel.split('/').any(|s| s == ".." || s.is_empty()) {
        return None;
    }
    let body = std::fs::read(dir.join(rel)).ok()?;
    let ctype = match rel.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript",
        Some("css") => "text/css",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    Some((body, ctype))
}

fn authorized(req: &Request, desktop: &DesktopSim) -> bool {
    let Some(expected) = &desktop.credentials else {
        return true;
    };
    let Some(value) = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .is_ok_and(|d| d == expected.as_bytes())
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    mut ws: WebSocketStream<S>,
    desktop: &DesktopSim,
) -> std::io::Result<()> {
    while let Some(Ok(msg)) = ws.next().await {
        let reply = match msg {
            Message::Text(t) if t.as_str() == "whoami" => Message::text(desktop.name.clone()),
            // A desktop ending the session itself: a close frame (1000), then the connection
            // dropped without waiting for the answer or sending TLS close_notify, as a
            // container shutting down its VNC server does.
            Message::Text(t) if t.as_str() == "bye" => {
                let _ = ws.send(Message::Close(None)).await;
                return Ok(());
            }
            // A desktop drawing to a viewer who types nothing: `ticks <count> <ms>` sends
            // `tick` that many times, that far apart.
            Message::Text(t) if t.as_str().starts_with("ticks ") => {
                let mut it = t.as_str().split_whitespace().skip(1);
                let mut next = || it.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                let (count, ms) = (next().min(1000), next().min(60_000));
                for _ in 0..count {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    if ws.send(Message::text("tick")).await.is_err() {
                        break;
                    }
                }
                continue;
            }
            Message::Text(t) if t.as_str().starts_with("stream ") => {
                let mut it = t
                    .as_str()
                    .split_whitespace()
                    .skip(1)
                    .map(|n| n.parse::<usize>().unwrap_or(0));
                let (count, size) = (
                    it.next().unwrap_or(0).min(1 << 20),
                    it.next().unwrap_or(0).min(1 << 20),
                );
                let frame = bytes::Bytes::from(vec![0x5a; size]);
                for _ in 0..count {
                    if ws.feed(Message::Binary(frame.clone())).await.is_err() {
                        break;
                    }
                }
                if ws.flush().await.is_err() {
                    break;
                }
                continue;
            }
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => break,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

async fn page<S: AsyncWrite + Unpin>(
    stream: &mut S,
    req: &Request,
    desktop: &DesktopSim,
) -> std::io::Result<()> {
    let html = format!(
        r#"<!doctype html><meta charset="utf-8"><title>desktop {name}</title>
<h1>desktop {name}</h1><p>path: <code>{path}</code></p><p id="ws">WebSocket: connecting...</p>
<script>
const url = new URL("websockify", location.href); url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(url, ["binary"]); const out = document.getElementById("ws");
ws.onopen = () => ws.send("whoami");
ws.onmessage = (m) => {{ out.textContent = "WebSocket: echo from desktop " + m.data; }};
ws.onclose = (e) => {{ if (!out.textContent.includes("echo")) out.textContent = "WebSocket closed, code " + e.code; }};
</script>
"#,
        name = desktop.name,
        path = req.target.replace('<', "&lt;"),
    );
    let body = if req.method == "HEAD" {
        Vec::new()
    } else {
        html.into_bytes()
    };
    respond(
        stream,
        "200 OK",
        "text/html; charset=utf-8",
        &body,
        &[],
        desktop,
    )
    .await
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    ctype: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    desktop: &DesktopSim,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nX-Desktop: {}\r\n",
        body.len(),
        desktop.name
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Reads one request head; returns it, the bytes it used, and its Content-Length.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(Request, usize, usize)>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let mut first = lines.next().unwrap_or_default().split(' ');
            let method = first.next().unwrap_or_default().to_string();
            let target = first.next().unwrap_or("/").to_string();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let req = Request {
                method,
                target,
                headers,
            };
            let body_len = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(Some((req, end + 4, body_len)));
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

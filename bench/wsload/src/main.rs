//! wsload: WebSocket load for deskgate's benchmarks. Every mode is bounded in count and time
//! and only connects to loopback addresses. Prints one JSON object with the results.
//!
//! - `rtt`: N sockets each send 64-byte messages and wait for the echo (round-trip times);
//!   with `--in-flight K` at most K messages are on their way at once over all sockets (K = 1:
//!   strict ping-pong, one wake-up of the proxy per message, nothing to batch).
//! - `paced`: small HTTPS requests at a fixed rate over C kept-alive connections; latency is
//!   counted from when each request was due (as wrk2 does), so a stall is not hidden by the
//!   requests it delayed.
//! - `stream`: one socket asks the desktop for `stream COUNT SIZE` frames (MB/s).
//! - `handshake`: new TLS connection + upgrade + one echo + close, repeatedly (per second).
//! - `hold`: N idle sockets opened, then (optionally) one message each every PERIOD for
//!   DURATION: counts drops and lost messages. Pauses after opening so RSS can be read.
//! - `serve`: a WSS echo upstream on ADDR (the handshake modes' desktop): it can refuse TLS
//!   resumption, so the proxy's upstream leg makes a full handshake every time, and it writes
//!   how many of its handshakes were full and how many resumed to a file once a second.
//!
//! `--no-resume` makes the client side (the browser leg) offer no session, as a browser's first
//! visit does; by default sessions are resumed, as a returning browser does.

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

#[derive(Parser)]
struct Cli {
    /// Target, e.g. 127.0.0.1:8443 (loopback only)
    #[arg(long)]
    addr: SocketAddr,
    /// Path of the WebSocket
    #[arg(long, default_value = "/websockify")]
    path: String,
    /// Host name for SNI and Host
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Offer no TLS session to resume: every connection makes a full handshake
    #[arg(long)]
    no_resume: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Rtt {
        #[arg(long, default_value_t = 100)]
        sockets: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// At most this many messages on their way at once, over all sockets (0: no limit)
        #[arg(long, default_value_t = 0)]
        in_flight: usize,
    },
    Paced {
        /// Requests per second, over all connections
        #[arg(long)]
        rate: f64,
        #[arg(long, default_value_t = 50)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value = "/whoami")]
        request_path: String,
    },
    Stream {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, default_value_t = 16384)]
        frame: usize,
    },
    Handshake {
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Stop after this many open/close cycles (all connections together)
        #[arg(long)]
        count: Option<u64>,
    },
    Hold {
        #[arg(long, default_value_t = 10000)]
        sockets: usize,
        /// Seconds to keep them open after all are connected
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
        /// Each socket sends one message every PERIOD seconds (0: stay idle)
        #[arg(long, default_value_t = 5.0)]
        period: f64,
        /// File created once all sockets are open (the caller reads RSS then)
        #[arg(long)]
        ready_file: Option<String>,
        /// Wait for this file before the message phase
        #[arg(long)]
        go_file: Option<String>,
        /// After GO_FILE, each socket sends one message of this many bytes and reads its echo
        /// (a desktop that was busy, then idle); then READY_FILE.burst is written and
        /// GO_FILE.burst awaited before the message phase
        #[arg(long, default_value_t = 0)]
        burst_bytes: usize,
    },
    Serve {
        #[arg(long)]
        cert: String,
        #[arg(long)]
        key: String,
        /// Neither session IDs nor tickets: every handshake is full
        #[arg(long)]
        refuse_resumption: bool,
        /// Written once a second: {"full": N, "resumed": M}
        #[arg(long)]
        stats_file: Option<String>,
    },
}

#[derive(Debug)]
struct AnyCert;
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// Host name for SNI and Host
    host: String,
    url: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Target {
    /// Connect + TLS + upgrade, bounded to 15 s (a proxy out of workers must not hang us).
    async fn connect(&self) -> Result<Ws, String> {
        tokio::time::timeout(Duration::from_secs(15), self.connect_unbounded())
            .await
            .map_err(|_| "connect timed out".to_string())?
    }

    async fn connect_unbounded(&self) -> Result<Ws, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| e.to_string())?;
        req.headers_mut()
            .insert("Origin", HeaderValue::from_static("https://localhost"));
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("binary"));
        let connector = tokio_tungstenite::Connector::Rustls(self.tls.clone());
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector))
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
        Ok(ws)
    }
}

/// The samples of all tasks, sorted, and their error count.
async fn gather(tasks: Vec<tokio::task::JoinHandle<(Vec<u64>, u64)>>) -> (Vec<u64>, u64) {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (samples, e) = t.await.unwrap();
        all.extend(samples);
        errors += e;
    }
    all.sort_unstable();
    (all, errors)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn next_data(ws: &mut Ws) -> Result<Message, String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(m @ (Message::Binary(_) | Message::Text(_))))) => return Ok(m),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return Err("closed".into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Err(_) => return Err("no answer in 30 s".into()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let loopback = match cli.addr.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    };
    assert!(loopback, "wsload only targets loopback addresses");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    if cli.no_resume {
        tls.resumption = rustls::client::Resumption::disabled();
    }
    let target = Arc::new(Target {
        addr: cli.addr,
        url: format!("wss://{}:{}{}", cli.host, cli.addr.port(), cli.path),
        host: cli.host,
        tls: Arc::new(tls),
    });
    let out = match cli.mode {
        Mode::Rtt {
            sockets,
            seconds,
            in_flight,
        } => rtt(target, sockets, seconds, in_flight).await,
        Mode::Paced {
            rate,
            connections,
            seconds,
            request_path,
        } => paced(target, rate, connections, seconds, &request_path).await,
        Mode::Stream { seconds, frame } => stream(target, seconds, frame).await,
        Mode::Handshake {
            concurrency,
            seconds,
            count,
        } => {
            let count = count.unwrap_or(u64::MAX);
            handshake(target, concurrency, seconds, count, !cli.no_resume).await
        }
        Mode::Hold {
            sockets,
            seconds,
            period,
            ready_file,
            go_file,
            burst_bytes,
        } => {
            let files = HoldFiles {
                ready: ready_file,
                go: go_file,
            };
            hold(target, sockets, seconds, period, files, burst_bytes).await
        }
        Mode::Serve {
            cert,
            key,
            refuse_resumption,
            stats_file,
        } => serve(cli.addr, &cert, &key, refuse_resumption, stats_file).await,
    };
    println!("{out}");
}

async fn rtt(
    target: Arc<Target>,
    sockets: usize,
    seconds: f64,
    in_flight: usize,
) -> serde_json::Value {
    // tokio's semaphore is fair: with one permit the sockets take turns.
    let permits = Arc::new(tokio::sync::Semaphore::new(if in_flight == 0 {
        tokio::sync::Semaphore::MAX_PERMITS
    } else {
        in_flight
    }));
    let mut conns = Vec::new();
    let mut connect_failed = 0u64;
    for _ in 0..sockets {
        match target.connect().await {
            Ok(ws) => conns.push(ws),
            Err(_) => connect_failed += 1,
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for mut ws in conns {
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let payload = vec![7u8; 64];
            while Instant::now() < deadline {
                let _turn = permits.acquire().await.expect("semaphore open");
                let t = Instant::now();
                if ws.send(Message::binary(payload.clone())).await.is_err()
                    || next_data(&mut ws).await.is_err()
                {
                    return (samples, 1u64);
                }
                samples.push(t.elapsed().as_micros() as u64);
            }
            let _ = ws.close(None).await;
            (samples, 0)
        }));
    }
    let started = Instant::now();
    let (all, errors) = gather(tasks).await;
    let elapsed = started.elapsed().as_secs_f64().max(seconds);
    serde_json::json!({ "messages": all.len(), "messages_per_s": all.len() as f64 / elapsed, "p50_us": percentile(&all, 0.5), "p99_us": percentile(&all, 0.99), "errors": errors + connect_failed })
}

async fn stream(target: Arc<Target>, seconds: f64, frame: usize) -> serde_json::Value {
    let Ok(mut ws) = target.connect().await else {
        return serde_json::json!({ "bytes": 0, "mb_per_s": 0.0, "error": "connect failed" });
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut bytes = 0u64;
    let batch = 256;
    'outer: while Instant::now() < deadline {
        if ws
            .send(Message::text(format!("stream {batch} {frame}")))
            .await
            .is_err()
        {
            break;
        }
        for _ in 0..batch {
            match next_data(&mut ws).await {
                Ok(m) => bytes += m.len() as u64,
                Err(_) => break 'outer,
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    serde_json::json!({ "bytes": bytes, "mb_per_s": bytes as f64 / 1e6 / secs })
}

async fn handshake(
    target: Arc<Target>,
    concurrency: usize,
    seconds: f64,
    count: u64,
    resume: bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let claimed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        // Each client is a browser of its own with its own session cache: one shared cache
        // keeps 8 TLS 1.3 tickets per server, so with more clients than that most would
        // arrive without a session to resume.
        let mut target = (*target).clone();
        if resume {
            let mut tls = (*target.tls).clone();
            tls.resumption = rustls::client::Resumption::in_memory_sessions(8);
            target.tls = Arc::new(tls);
        }
        let (done, failed) = (done.clone(), failed.clone());
        let (claimed, resumed) = (claimed.clone(), resumed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline && claimed.fetch_add(1, Ordering::Relaxed) < count {
                let ok = async {
                    let mut ws = target.connect().await?;
                    if let tokio_tungstenite::MaybeTlsStream::Rustls(tls) = ws.get_ref() {
                        if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
                        {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    ws.send(Message::binary(vec![1u8; 32]))
                        .await
                        .map_err(|e| e.to_string())?;
                    next_data(&mut ws).await?;
                    ws.close(None).await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(())
                }
                .await;
                if ok.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    serde_json::json!({ "handshakes": n, "per_s": n as f64 / secs, "failed": failed.load(Ordering::Relaxed), "resumed": resumed.load(Ordering::Relaxed) })
}

/// The files through which `hold` tells its caller when to measure, and waits for it.
struct HoldFiles {
    ready: Option<String>,
    go: Option<String>,
}

impl HoldFiles {
    /// Write READY+suffix with the number of open sockets, then wait (bounded) for GO+suffix.
    async fn signal_and_wait(&self, suffix: &str, open: usize) {
        if let Some(f) = &self.ready {
            std::fs::write(format!("{f}{suffix}"), open.to_string()).expect("ready file");
        }
        if let Some(f) = &self.go {
            let go = format!("{f}{suffix}");
            let until = Instant::now() + Duration::from_secs(300);
            while !std::path::Path::new(&go).exists() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn hold(
    target: Arc<Target>,
    sockets: usize,
    seconds: f64,
    period: f64,
    files: HoldFiles,
    burst_bytes: usize,
) -> serde_json::Value {
    let mut conns = Vec::with_capacity(sockets);
    let mut connect_failed = 0u64;
    // Open in small concurrent batches: bounded, and fast enough for 10,000. A proxy that
    // cannot take more (out of workers) is given up on after 200 failed connections.
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut opened = 0;
    while opened < sockets || !pending.is_empty() {
        while opened < sockets && pending.len() < 64 && connect_failed < 200 {
            let t = target.clone();
            pending.push(async move { t.connect().await });
            opened += 1;
        }
        match pending.next().await {
            Some(Ok(ws)) => conns.push(ws),
            Some(Err(_)) => connect_failed += 1,
            None => break,
        }
    }
    drop(pending);
    files.signal_and_wait("", conns.len()).await;
    let mut burst_failed = 0u64;
    if burst_bytes > 0 {
        let burst = Message::binary(vec![5u8; burst_bytes]);
        for ws in conns.iter_mut() {
            if ws.send(burst.clone()).await.is_err() || next_data(ws).await.is_err() {
                burst_failed += 1;
            }
        }
        files.signal_and_wait(".burst", conns.len()).await;
    }
    let open = conns.len();
    let sent = Arc::new(AtomicU64::new(0));
    let echoed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::with_capacity(open);
    for (i, mut ws) in conns.into_iter().enumerate() {
        let (sent, echoed, dropped, stop) =
            (sent.clone(), echoed.clone(), dropped.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the sockets over the period so messages do not all go at once.
            let offset = if period > 0.0 {
                Duration::from_secs_f64(period * (i as f64 / open.max(1) as f64))
            } else {
                Duration::ZERO
            };
            tokio::time::sleep(offset.min(deadline.saturating_duration_since(Instant::now())))
                .await;
            loop {
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    break;
                }
                if period > 0.0 {
                    sent.fetch_add(1, Ordering::Relaxed);
                    if ws.send(Message::binary(vec![3u8; 64])).await.is_err()
                        || next_data(&mut ws).await.is_err()
                    {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    echoed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(
                        Duration::from_secs_f64(period)
                            .min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                } else {
                    // Idle: notice a drop as soon as it happens.
                    match tokio::time::timeout(
                        deadline.saturating_duration_since(Instant::now()),
                        ws.next(),
                    )
                    .await
                    {
                        Err(_) => break,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let s = sent.load(Ordering::Relaxed);
    let e = echoed.load(Ordering::Relaxed);
    serde_json::json!({ "opened": open, "connect_failed": connect_failed, "burst_failed": burst_failed, "dropped": dropped.load(Ordering::Relaxed), "sent": s, "echoed": e, "lost": s - e })
}

/// One kept-alive HTTPS connection for `paced`: sends GET and reads one response
/// (Content-Length bodies only, which is what the test desktop answers).
struct HttpConn {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl HttpConn {
    async fn open(target: &Target, path: &str) -> Result<HttpConn, String> {
        let host = &target.host;
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(target.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
        Ok(HttpConn {
            tls,
            request,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn exchange(&mut self) -> Result<u16, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.tls
            .write_all(&self.request)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|e| e.to_string())?;
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or("no status line")?;
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .ok_or("no Content-Length")?;
                let total = end + 4 + length;
                if self.buf.len() >= total {
                    self.buf.drain(..total);
                    return Ok(status);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.tls.read(&mut chunk))
                .await
                .map_err(|_| "no answer in 30 s")?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn paced(
    target: Arc<Target>,
    rate: f64,
    connections: usize,
    seconds: f64,
    path: &str,
) -> serde_json::Value {
    let mut conns = Vec::new();
    for _ in 0..connections {
        match HttpConn::open(&target, path).await {
            Ok(c) => conns.push(c),
            Err(e) => return serde_json::json!({ "error": e }),
        }
    }
    // Request k of connection i is due at start + (i + k * C) / rate: the connections
    // interleave evenly, and the whole run offers exactly `rate` requests per second.
    let start = Instant::now() + Duration::from_millis(50);
    let total = (rate * seconds) as u64;
    let c = conns.len() as u64;
    let mut tasks = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut samples, mut errors) = (Vec::new(), 0u64);
            let mut k = i as u64;
            while k < total {
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                match conn.exchange().await {
                    Ok(200) => samples.push(due.elapsed().as_micros() as u64),
                    _ => {
                        errors += 1;
                        break;
                    }
                }
                k += c;
            }
            (samples, errors)
        }));
    }
    let (all, errors) = gather(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    serde_json::json!({ "requests": all.len(), "offered_per_s": rate, "achieved_per_s": all.len() as f64 / elapsed,
        "p50_us": percentile(&all, 0.5), "p99_us": percentile(&all, 0.99), "p999_us": percentile(&all, 0.999),
        "max_us": all.last().copied().unwrap_or(0), "errors": errors })
}

/// The handshake modes' upstream: accepts WSS on `addr` and echoes every data message.
async fn serve(
    addr: SocketAddr,
    cert: &str,
    key: &str,
    refuse_resumption: bool,
    stats_file: Option<String>,
) -> serde_json::Value {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("certificate file")
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("certificate and key");
    if refuse_resumption {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    if let Some(path) = stats_file {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                let text = serde_json::json!({ "full": counts[0].load(Ordering::Relaxed), "resumed": counts[1].load(Ordering::Relaxed) });
                let _ = std::fs::write(&path, text.to_string());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, counts) = (acceptor.clone(), counts.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            counts[resumed as usize].fetch_add(1, Ordering::Relaxed);
            // noVNC asks for the `binary` subprotocol and checks that it was granted.
            let grant = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                         mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                if let Some(p) = req.headers().get("Sec-WebSocket-Protocol") {
                    resp.headers_mut().insert("Sec-WebSocket-Protocol", p.clone());
                }
                Ok(resp)
            };
            let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tls, grant).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Binary(_) | Message::Text(_) => {
                        if ws.send(m).await.is_err() {
                            return;
                        }
                    }
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        });
    }
}

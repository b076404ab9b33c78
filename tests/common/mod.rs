//! Test harness: the real `deskgate` binary on loopback ports, real TLS peers, real clients.
#![allow(dead_code)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream as TokioTcp;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TokioTcp>>;

pub const BIN: &str = env!("CARGO_BIN_EXE_deskgate");
pub const DESKTOP_USER: &str = "kasm_user";
pub const DESKTOP_PASSWORD: &str = "vnc-secret-pw";
/// The fixed `Sec-WebSocket-Key` clients send to an eager desktop.
pub const EAGER_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A loopback port nothing listens on, handed out to no other test process that uses this
/// function, and never to the kernel's `bind(:0)` or `connect`.
///
/// A port found free by binding `:0` is free only until the probe socket closes: the kernel
/// may give the same port to the next `bind(:0)` anywhere on the machine (pebble, BIND, a
/// desktop stand-in, another test binary's deskgate), and the loser's deskgate exits before
/// listening or its client reaches the wrong server (`tests/log_noise.rs` once failed so right
/// after `tests/acme.rs`; a CHP test once saw its API call answered `404` by a proxy port).
/// So ports come from below the kernel's ephemeral range (`ip_local_port_range`), which
/// `bind(:0)` and outgoing connections never use; each process starts in a window of its own
/// (from its pid), holds a lock file per port it hands out for as long as it lives (so
/// concurrent test processes never share one, and a crashed one frees its ports), and checks
/// each with a bind first (a server started by hand may sit there).
pub fn free_port() -> u16 {
    static CLAIMS: Mutex<Option<PortClaims>> = Mutex::new(None);
    let mut claims = CLAIMS.lock().unwrap();
    claims.get_or_insert_with(PortClaims::new).next()
}

/// Ports from here up to the ephemeral range: above the well-known and most fixed
/// development ports (pebble's 14000/15000, Redis's 6379, 8080).
const PORTS_FROM: u16 = 20000;
/// Ports per process window.
const PORT_WINDOW: u16 = 256;

struct PortClaims {
    /// The ephemeral range's first port (end of the pool, exclusive).
    ephemeral_from: u16,
    /// The next candidate, as an offset from `PORTS_FROM`, and how many were tried.
    offset: u16,
    tried: u16,
    locks: PathBuf,
    /// Held while the process lives: the lock of every port handed out.
    held: Vec<std::fs::File>,
}

impl PortClaims {
    fn new() -> PortClaims {
        let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        assert!(
            ephemeral_from >= PORTS_FROM + PORT_WINDOW,
            "the ephemeral port range starts at {ephemeral_from} \
             (/proc/sys/net/ipv4/ip_local_port_range), leaving no test ports from {PORTS_FROM}"
        );
        let windows = (ephemeral_from - PORTS_FROM) / PORT_WINDOW;
        let window = (std::process::id() % u32::from(windows)) as u16;
        let locks = std::env::temp_dir().join("deskgate-test-ports");
        std::fs::create_dir_all(&locks).unwrap();
        PortClaims {
            ephemeral_from,
            offset: window * PORT_WINDOW,
            tried: 0,
            locks,
            held: Vec::new(),
        }
    }

    fn next(&mut self) -> u16 {
        let pool = self.ephemeral_from - PORTS_FROM;
        while self.tried < pool {
            let port = PORTS_FROM + self.offset;
            self.offset = (self.offset + 1) % pool;
            self.tried += 1;
            let lock = match std::fs::File::create(self.locks.join(format!("{port}.lock"))) {
                Ok(f) if f.try_lock().is_ok() => f,
                _ => continue, // another test process holds it
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                self.held.push(lock);
                return port;
            }
        }
        panic!(
            "no free test port left in {PORTS_FROM}..{} (every one taken or locked under {})",
            self.ephemeral_from,
            self.locks.display()
        );
    }
}

/// Certificates and secrets for one test, in its own directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub edge_cert: PathBuf,
    pub edge_key: PathBuf,
    pub wild_cert: PathBuf,
    pub wild_key: PathBuf,
    pub desk_cert: PathBuf,
    pub desk_key: PathBuf,
    pub password_file: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (edge_cert, edge_key) = deskgate::tls::write_self_signed(
            dir.path(),
            "edge",
            &["hub.test", "localhost", "127.0.0.1"],
        )
        .unwrap();
        let (wild_cert, wild_key) =
            deskgate::tls::write_self_signed(dir.path(), "wild", &["*.hub.test"]).unwrap();
        let (desk_cert, desk_key) =
            deskgate::tls::write_self_signed(dir.path(), "desktop", &["kasm"]).unwrap();
        let password_file = dir.path().join("vnc-password");
        std::fs::write(&password_file, format!("{DESKTOP_PASSWORD}\n")).unwrap();
        Fixture {
            dir,
            edge_cert,
            edge_key,
            wild_cert,
            wild_key,
            desk_cert,
            desk_key,
            password_file,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A KasmVNC-like desktop (HTTPS + WSS, self-signed, Basic auth) on a loopback port.
    pub fn desktop(&self, name: &str) -> SocketAddr {
        self.desktop_counted(name).0
    }

    /// A desktop, and the count of WebSocket upgrades it accepted.
    pub fn desktop_counted(&self, name: &str) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let sim = deskgate::demo::desktop::DesktopSim::new(
            name,
            Some(format!("{DESKTOP_USER}:{DESKTOP_PASSWORD}")),
        );
        let upgrades = sim.upgrades.clone();
        (
            deskgate::demo::desktop::spawn(sim, "127.0.0.1:0", &self.desk_cert, &self.desk_key)
                .unwrap(),
            upgrades,
        )
    }

    /// A desktop that sends its 101 before the request arrives (see `DesktopSim::eager_upgrade_key`).
    pub fn eager_desktop(&self, name: &str) -> SocketAddr {
        deskgate::demo::desktop::spawn(
            deskgate::demo::desktop::DesktopSim {
                eager_upgrade_key: Some(EAGER_KEY.into()),
                ..deskgate::demo::desktop::DesktopSim::new(name, None)
            },
            "127.0.0.1:0",
            &self.desk_cert,
            &self.desk_key,
        )
        .unwrap()
    }

    /// YAML for an upstream that is such a desktop.
    pub fn desktop_upstream(&self, name: &str, addr: SocketAddr) -> String {
        format!(
            "  {name}:\n    servers: [\"{addr}\"]\n    tls: {{ verify: false, sni: kasm }}\n    basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n",
            self.password_file.display()
        )
    }

    /// The standard TLS listener block with the default and the wildcard certificate.
    pub fn tls_listener(&self, port: u16) -> String {
        format!(
            "  - addr: \"127.0.0.1:{port}\"\n    tls:\n      certs:\n        - {{ cert: \"{}\", key: \"{}\" }}\n        - {{ cert: \"{}\", key: \"{}\", hosts: [\"*.hub.test\"] }}\n",
            self.edge_cert.display(),
            self.edge_key.display(),
            self.wild_cert.display(),
            self.wild_key.display()
        )
    }
}

/// A running deskgate; killed on drop. Its log is kept in the fixture directory.
pub struct Deskgate {
    child: Child,
    pub https_port: u16,
    pub log: PathBuf,
}

impl Deskgate {
    /// Starts `deskgate -c` on `yaml` and waits until `ready_port` accepts connections.
    pub fn start(dir: &Path, name: &str, yaml: &str, ready_port: u16) -> Deskgate {
        Self::start_with_env(dir, name, yaml, ready_port, &[])
    }

    /// Starts deskgate with the admin API's token (`ADMIN_TOKEN` in `CONFIGPROXY_AUTH_TOKEN`,
    /// which the YAML names as `token_env`) and waits for both `ready_port` and `admin_port`.
    pub fn start_with_admin(
        dir: &Path,
        name: &str,
        yaml: &str,
        ready_port: u16,
        admin_port: u16,
    ) -> Deskgate {
        let d = Self::start_with_env(
            dir,
            name,
            yaml,
            ready_port,
            &[("CONFIGPROXY_AUTH_TOKEN", ADMIN_TOKEN)],
        );
        wait_port(admin_port);
        d
    }

    pub fn start_with_env(
        dir: &Path,
        name: &str,
        yaml: &str,
        ready_port: u16,
        env: &[(&str, &str)],
    ) -> Deskgate {
        let conf = dir.join(format!("{name}.yaml"));
        std::fs::write(&conf, yaml).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("-c").arg(&conf).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::run(&mut cmd, dir.join(format!("{name}.log")), ready_port)
    }

    /// Runs `cmd` (a deskgate however started: an installed binary, under chroot...) with its
    /// output in `log`, and waits until `ready_port` accepts connections.
    pub fn run(cmd: &mut Command, log: PathBuf, ready_port: u16) -> Deskgate {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self::from_child(child, ready_port, log)
    }

    pub fn from_child(child: Child, https_port: u16, log: PathBuf) -> Deskgate {
        let mut d = Deskgate {
            child,
            https_port,
            log,
        };
        d.wait_ready(https_port);
        d
    }

    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "deskgate exited with {status} before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "deskgate not listening on {port} after 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Deskgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct CurlResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// curl against deskgate; `url` uses real test host names, resolved to 127.0.0.1.
pub fn curl(url: &str, extra: &[&str]) -> CurlResponse {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap().to_string();
    let port = parsed.port_or_known_default().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let out = Command::new("curl")
        .args(["-s", "-k", "--max-time", "20", "-D"])
        .arg(&head)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(extra)
        .arg(url)
        .stderr(Stdio::inherit())
        .output()
        .expect("curl is installed");
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    let status = headers.lines().last_status();
    CurlResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

trait LastStatus {
    fn last_status(self) -> u16;
}
impl<'a, I: Iterator<Item = &'a str>> LastStatus for I {
    fn last_status(self) -> u16 {
        self.filter(|l| l.starts_with("HTTP/"))
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// Accepts any server certificate and remembers the last one it saw (to check SNI choice).
#[derive(Debug, Default)]
pub struct RecordingVerifier {
    pub last_cert: Mutex<Vec<u8>>,
}

impl rustls::client::danger::ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.last_cert.lock().unwrap() = end_entity.to_vec();
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

pub fn client_tls(verifier: Arc<RecordingVerifier>) -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// Opens `url` (wss://name:port/...) on 127.0.0.1 the way a browser running noVNC does:
/// with `Origin` and `Sec-WebSocket-Protocol: binary`.
pub async fn ws_connect(
    url: &str,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    ws_connect_with(
        url,
        &[
            ("Origin", "https://hub.test"),
            ("Sec-WebSocket-Protocol", "binary"),
        ],
        Arc::new(RecordingVerifier::default()),
    )
    .await
}

pub async fn ws_connect_with(
    url: &str,
    headers: &[(&str, &str)],
    verifier: Arc<RecordingVerifier>,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let parsed = url::Url::parse(url).unwrap();
    let port = parsed.port_or_known_default().unwrap();
    let tcp = TokioTcp::connect(("127.0.0.1", port))
        .await
        .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
    tcp.set_nodelay(true).unwrap();
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let connector = tokio_tungstenite::Connector::Rustls(client_tls(verifier));
    tokio_tungstenite::client_async_tls_with_config(req, tcp, None, Some(connector)).await
}

pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

pub mod hub;
pub mod redis;

/// Waits (bounded) until something listens on `port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listening on port {port} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// Calls deskgate's admin API with curl; `token: None` sends no Authorization.
pub fn admin(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> CurlResponse {
    let mut args: Vec<String> = vec!["-X".into(), method.into()];
    if let Some(t) = token {
        args.push("-H".into());
        args.push(format!("Authorization: token {t}"));
    }
    if let Some(b) = body {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b.into(),
        ]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&format!("http://127.0.0.1:{port}{path}"), &refs)
}

/// A desktop in its own process (`deskgate desktop-sim`), so a test can kill it.
pub struct DesktopProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl DesktopProcess {
    pub fn start(fx: &Fixture, name: &str, port: u16) -> DesktopProcess {
        let child = Command::new(BIN)
            .args([
                "desktop-sim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
                "--credentials",
                &format!("{DESKTOP_USER}:{DESKTOP_PASSWORD}"),
                "--cert",
            ])
            .arg(&fx.desk_cert)
            .arg("--key")
            .arg(&fx.desk_key)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port);
        DesktopProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DesktopProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// deskgate's /metrics text.
pub fn metrics_text(admin_port: u16) -> String {
    curl(&format!("http://127.0.0.1:{admin_port}/metrics"), &[]).body
}

/// The value of the series `name` (with its labels, as exposed: `x_total{kind="a"}`).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

/// Value of an unlabelled metric from deskgate's /metrics (0 when it is not there yet).
pub fn metric(admin_port: u16, name: &str) -> u64 {
    metric_value(&metrics_text(admin_port), name).map_or(0, |v| v as u64)
}

/// Polls `cond` every 20 ms for up to `limit`; panics with `what` if it never holds.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `text` on a WebSocket and returns the text message that comes back.
pub async fn ask(ws: &mut Ws, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
    ws.next()
        .await
        .expect("a reply")
        .expect("a WebSocket message")
        .into_text()
        .expect("a text message")
        .as_str()
        .to_string()
}

/// A child process killed and reaped when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fails with a clear message when a tool `./dev test` installs is missing.
pub fn require(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is missing: run the tests with `./dev test`, which installs it"
    );
}

/// An edge with an admin listener (runtime routes), as the shared route store tests run two.
pub struct Edge {
    pub d: Deskgate,
    pub admin: u16,
}

/// The desktop that answers `prefix/whoami` through the edge's TLS listener, if one does.
pub fn served(e: &Edge, prefix: &str) -> Option<String> {
    let r = curl(
        &format!("https://hub.test:{}{prefix}/whoami", e.d.https_port),
        &[],
    );
    (r.status == 200).then(|| r.body.trim().to_string())
}

/// JupyterHub's own proxy client (`jupyterhub.proxy.ConfigurableHTTPProxy`) against the
/// routes API at `api`, one call per run (tests/jupyterhub_client.py).
pub fn jupyterhub(api: &str, args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(api)
        .arg(ADMIN_TOKEN)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "jupyterhub client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An edge with alice's desktop under `/desktop/alice/` and the admin listener (sessions API,
/// admin page): the deskgate and its TLS and admin ports.
pub fn alice_with_admin(fx: &Fixture) -> (Deskgate, u16, u16) {
    let (https_port, admin_port) = (free_port(), free_port());
    let alice = fx.desktop("alice");
    let yaml = format!(
        "listeners:\n{}upstreams:\n{}routes:\n  - {{ path: \"/desktop/alice/\", strip_prefix: true, upstream: desktop-alice }}\nadmin: {{ addr: \"127.0.0.1:{admin_port}\", token_env: CONFIGPROXY_AUTH_TOKEN }}\n",
        fx.tls_listener(https_port),
        fx.desktop_upstream("desktop-alice", alice),
    );
    let edge = Deskgate::start_with_admin(fx.path(), "edge", &yaml, https_port, admin_port);
    (edge, https_port, admin_port)
}

/// A server on a loopback port, run on its own thread and runtime (so it keeps answering while
/// a test blocks): `serve` gets each accepted connection in a task of its own.
pub fn serve_on_thread<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TokioTcp) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp));
            }
        });
    });
    addr
}

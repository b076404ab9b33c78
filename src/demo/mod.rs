//! `deskgate demo`: the whole path on one machine with nothing to write first. Generates
//! certificates, starts a KasmVNC-like desktop on a loopback port, and routes to it the way
//! the hub does (by path and by host). With Debian's `novnc` installed, the desktop serves
//! noVNC and a live VNC picture (`rfb.rs`); otherwise a page that shows a WebSocket echo. The
//! admin page runs on its own listener with a generated token.

pub mod desktop;
pub mod rfb;

use crate::config::{ConfigErrors, LoadOptions};
use crate::runtime::{self, Runtime};
use crate::tls::CertificateError;
use std::path::PathBuf;
use std::process::ExitCode;

/// `deskgate demo`'s flags.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Plain-HTTP listener (redirects to HTTPS)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// TLS listener
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub tls_listen: String,
    /// Admin listener (routes API, metrics, the admin page at /ui/)
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub admin_listen: String,
    /// noVNC's files (Debian's `novnc` package); `none` shows the WebSocket echo page
    #[arg(long, default_value = "/usr/share/novnc")]
    pub novnc: String,
}

/// `deskgate demo`: prints where to point a browser, then serves (`upgrade`: `-u`, taking over
/// a running deskgate's sockets).
pub fn run(args: &DemoArgs, upgrade: bool) -> ExitCode {
    match prepare(args) {
        Ok(demo) => {
            println!("{}", demo.banner);
            crate::server::serve(&demo.runtime, upgrade, None)
        }
        Err(e) => {
            eprintln!("deskgate demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the demo (or its desktop) did not start, naming the file or address.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("demo desktop TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("demo desktop cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("demo desktop on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigErrors),
}

/// `std::fs::write`, naming the file when it fails.
fn write(path: &std::path::Path, bytes: impl AsRef<[u8]>) -> Result<(), DemoError> {
    std::fs::write(path, bytes).map_err(|source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    })
}

pub struct Demo {
    pub runtime: Runtime,
    pub banner: String,
    pub dir: PathBuf,
}

pub fn prepare(opts: &DemoArgs) -> Result<Demo, DemoError> {
    let dir = std::env::temp_dir().join(format!("deskgate-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let (edge_cert, edge_key) =
        crate::tls::write_self_signed(&dir, "edge", &["localhost", "127.0.0.1", "*.localhost"])?;
    let (desk_cert, desk_key) = crate::tls::write_self_signed(&dir, "desktop", &["kasm"])?;
    let password = format!(
        "demo-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let password_file = dir.join("vnc-password");
    write(&password_file, &password)?;
    // `none`, or a folder without noVNC: the echo page.
    let novnc_dir = Some(PathBuf::from(&opts.novnc))
        .filter(|d| opts.novnc != "none" && d.join("vnc.html").is_file());
    let mut sim = desktop::DesktopSim::new("demo", Some(format!("kasm_user:{password}")));
    sim.novnc_dir = novnc_dir.clone();
    let desktop = desktop::spawn(sim, "127.0.0.1:0", &desk_cert, &desk_key)?;
    let admin_token = crate::support::secret::random_hex(16);
    let token_file = dir.join("admin-token");
    crate::support::secret::write_private(&token_file, admin_token.as_bytes()).map_err(
        |source| DemoError::Write {
            path: token_file.clone(),
            source,
        },
    )?;
    let yaml = format!(
        r#"# deskgate demo (generated)
listeners:
  - addr: "{listen}"
    redirect_https: true
  - addr: "{tls_listen}"
    tls:
      certs:
        - {{ cert: "{edge_cert}", key: "{edge_key}" }}
upstreams:
  desktop-demo:
    servers: ["{desktop}"]
    tls: {{ verify: false, sni: kasm }}
    basic_auth: {{ user: kasm_user, password_file: "{password_file}" }}
routes:
  - host: "desktop-{{name}}.localhost"
    upstream: "desktop-{{name}}"
  - path: "/desktop/{{name}}/"
    strip_prefix: true
    upstream: "desktop-{{name}}"
    block: ["/api/"]
    novnc: {novnc}
  - path: "/"
    upstream: desktop-demo
admin: {{ addr: "{admin_listen}", token_file: "{token_file}" }}
# Each desktop's picture to the browser is capped (the admin page shows its rate against it).
websocket: {{ max_rate: 8MiB/s, burst: 1MiB }}
timeouts: {{ connect: 3s, read: 60s, upgraded_idle: 3600s }}
"#,
        listen = opts.listen,
        tls_listen = opts.tls_listen,
        admin_listen = opts.admin_listen,
        token_file = token_file.display(),
        novnc = novnc_dir.is_some(),
        edge_cert = edge_cert.display(),
        edge_key = edge_key.display(),
        password_file = password_file.display(),
    );
    write(&dir.join("deskgate.yaml"), &yaml)?;
    let runtime =
        runtime::load_str("<demo>", &yaml, LoadOptions::default()).map_err(ConfigErrors)?;
    let port = opts.tls_listen.rsplit(':').next().unwrap_or("8443");
    let open_hint = match &novnc_dir {
        Some(d) => format!(
            "(open the desktop URL in a browser: noVNC from {} shows the demo desktop, a clock \
             and a moving square; the certificate is self-signed)",
            d.display()
        ),
        None => "(open the by-path URL in a browser to see the WebSocket echo; install Debian's \
                 `novnc` for a desktop picture; the certificate is self-signed)"
            .to_string(),
    };
    let banner = format!(
        "deskgate demo\n\
         \x20 desktop:  https://127.0.0.1:{port}/desktop/demo/vnc.html?autoconnect=true&resize=scale\n\
         \x20 by path:  https://127.0.0.1:{port}/desktop/demo/\n\
         \x20 by host:  https://desktop-demo.localhost:{port}/\n\
         \x20 admin page: http://{admin}/ui/  token: {admin_token}\n\
         \x20 the desktop itself (KasmVNC-like, self-signed, Basic auth): https://{desktop}\n\
         \x20 plain HTTP on http://{listen}/ redirects to HTTPS\n\
         \x20 config:   {cfg}\n\
         try:  curl -k https://127.0.0.1:{port}/desktop/demo/whoami\n\
         {open_hint}",
        listen = opts.listen,
        admin = opts.admin_listen,
        cfg = dir.join("deskgate.yaml").display(),
    );
    Ok(Demo {
        runtime,
        banner,
        dir,
    })
}

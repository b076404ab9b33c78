//! What operators install: the Debian package and the OCI image, built by
//! `deploy/package/build` from the binary under test (a debug build: `./dev package` makes the
//! release artifacts the same way). The package is installed on this machine with dpkg, run,
//! reinstalled and purged; the image is unpacked and its own files run under `chroot` as its
//! non-root user (no container engine runs here), serving a WebSocket echo and JupyterHub's
//! proxy API with the Kubernetes proxy pod's flags.

mod common;
use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

struct Artifacts {
    _dir: tempfile::TempDir,
    deb: PathBuf,
    image: PathBuf,
}

/// Built once for both tests.
fn artifacts() -> &'static Artifacts {
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = run(
            Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/package/build"))
                .args(["--binary", BIN, "--version", "0.1.0", "--out"])
                .arg(dir.path()),
        );
        println!("{out}");
        let deb = dir.path().join("debian/deskgate_0.1.0_amd64.deb");
        let image = dir.path().join("oci/deskgate-0.1.0.tar");
        assert!(deb.is_file() && image.is_file(), "{out}");
        Artifacts {
            _dir: dir,
            deb,
            image,
        }
    })
}

/// Runs `cmd`, fails the test with its output unless it succeeds; returns stdout + stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc_geteuid() };
    assert_eq!(
        uid, 0,
        "installing a package and chroot need root (CI runs as root)"
    );
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A TLS listener on `port` with a route to one desktop, its files named as `at` maps them.
fn echo_config(port: u16, desktop: SocketAddr, cert: &Path, key: &Path, password: &Path) -> String {
    format!(
        "listeners:\n  - addr: \"127.0.0.1:{port}\"\n    tls:\n      certs:\n        - {{ cert: \"{}\", key: \"{}\" }}\n\
         upstreams:\n  alice:\n    servers: [\"{desktop}\"]\n    tls: {{ verify: false, sni: kasm }}\n    basic_auth: {{ user: {DESKTOP_USER}, password_file: \"{}\" }}\n\
         routes:\n  - path: /desktop/alice/\n    upstream: alice\n    strip_prefix: true\n",
        cert.display(),
        key.display(),
        password.display()
    )
}

async fn echo_through(port: u16) {
    let url = format!("wss://hub.test:{port}/desktop/alice/websockify");
    let (mut ws, resp) = ws_connect(&url).await.expect("upgrade through deskgate");
    assert_eq!(resp.status(), 101);
    assert_eq!(
        ask(&mut ws, "through the package").await,
        "through the package"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deb_installs_runs_survives_reinstall_and_purges_clean() {
    require_root();
    let deb = &artifacts().deb;
    // A run that died half-way may have left it installed.
    let _ = Command::new("dpkg").args(["--purge", "deskgate"]).output();

    // Lintian clean; the one override (serde_yaml's compiled-in libyaml) says why in the file.
    require("lintian");
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(deb)
        .output()
        .unwrap();
    let tags: Vec<String> = String::from_utf8_lossy(&lint.stdout)
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .map(str::to_string)
        .collect();
    assert!(tags.is_empty(), "lintian: {tags:#?}");

    run(Command::new("dpkg").arg("-i").arg(deb));
    let version = run(Command::new("/usr/bin/deskgate").arg("--version"));
    assert!(version.contains("deskgate 0.1.0"), "{version}");
    let check =
        run(Command::new("/usr/bin/deskgate").args(["-t", "-c", "/etc/deskgate/deskgate.yaml"]));
    assert!(check.contains(": ok"), "{check}");

    // The user, its state directory, the config readable by it and no one else.
    let passwd = run(Command::new("getent").args(["passwd", "deskgate"]));
    assert!(
        passwd.contains(":/var/lib/deskgate:/usr/sbin/nologin"),
        "{passwd}"
    );
    let uid: u32 = passwd.split(':').nth(2).unwrap().parse().unwrap();
    let state = std::fs::metadata("/var/lib/deskgate").unwrap();
    assert_eq!(
        (state.uid(), state.permissions().mode() & 0o7777),
        (uid, 0o750)
    );
    let conf = std::fs::metadata("/etc/deskgate/deskgate.yaml").unwrap();
    assert_eq!((conf.uid(), conf.permissions().mode() & 0o7777), (0, 0o640));
    assert_eq!(
        std::fs::canonicalize("/usr/lib/deskgate/configurable-http-proxy").unwrap(),
        PathBuf::from("/usr/bin/deskgate")
    );
    assert!(Path::new("/usr/share/doc/deskgate/README.md").is_file());
    assert!(Path::new("/usr/share/doc/deskgate/apache-migration.md").is_file());
    // Enabled for the next boot; not started here, where systemd does not run.
    assert!(Path::new("/etc/systemd/system/multi-user.target.wants/deskgate.service").exists());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/deskgate.service"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(
        verify.status.success() && !text.contains("deskgate.service:"),
        "systemd-analyze verify: {text}"
    );

    // An operator's edit survives reinstalling the package (a conffile).
    let edited = std::fs::read_to_string("/etc/deskgate/deskgate.yaml").unwrap()
        + "# edited by the operator\n";
    std::fs::write("/etc/deskgate/deskgate.yaml", &edited).unwrap();
    run(Command::new("dpkg")
        .args(["--force-confold", "-i"])
        .arg(deb));
    assert_eq!(
        std::fs::read_to_string("/etc/deskgate/deskgate.yaml").unwrap(),
        edited
    );

    // The installed binary serves a WebSocket echo through TLS to the test desktop.
    let fx = Fixture::new();
    let desktop = fx.desktop("alice");
    let port = free_port();
    let yaml = echo_config(
        port,
        desktop,
        &fx.edge_cert,
        &fx.edge_key,
        &fx.password_file,
    );
    let conf = fx.path().join("installed.yaml");
    std::fs::write(&conf, yaml).unwrap();
    let edge = Deskgate::run(
        Command::new("/usr/bin/deskgate").arg("-c").arg(&conf),
        fx.path().join("installed.log"),
        port,
    );
    echo_through(port).await;
    drop(edge);

    run(Command::new("dpkg").args(["--purge", "deskgate"]));
    for left in [
        "/usr/bin/deskgate",
        "/usr/lib/deskgate",
        "/etc/deskgate",
        "/var/lib/deskgate",
        "/lib/systemd/system/deskgate.service",
        "/etc/systemd/system/multi-user.target.wants/deskgate.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/deskgate.service.dsh-also",
        "/usr/share/doc/deskgate",
    ] {
        assert!(!Path::new(left).exists(), "{left} is left after purge");
    }
    assert!(
        !Command::new("getent")
            .args(["passwd", "deskgate"])
            .output()
            .unwrap()
            .status
            .success(),
        "the deskgate user is left after purge"
    );
}

/// The image's root filesystem, unpacked from the archive the way a runtime reads it:
/// index.json -> manifest -> config and layer.
struct UnpackedImage {
    dir: tempfile::TempDir,
    config: serde_json::Value,
}

impl UnpackedImage {
    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// `chroot --userspec` as the image's user, with the image's PATH.
    fn command(&self, program: &str) -> Command {
        let user = self.config["config"]["User"].as_str().unwrap().to_string();
        let mut cmd = Command::new("/usr/sbin/chroot");
        cmd.arg(format!("--userspec={user}"))
            .arg(self.rootfs())
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/bin");
        cmd
    }
}

fn unpack(image: &Path) -> UnpackedImage {
    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(&oci).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(image)
        .arg("-C")
        .arg(&oci));
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let blob = |digest: &str| {
        oci.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = json(&oci.join("index.json"));
    let manifest = json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = json(&blob(manifest["config"]["digest"].as_str().unwrap()));
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    // docker load reads manifest.json: the same config and layer.
    let docker = json(&oci.join("manifest.json"));
    assert!(oci.join(docker[0]["Config"].as_str().unwrap()).is_file());
    assert!(oci.join(docker[0]["Layers"][0].as_str().unwrap()).is_file());
    assert_eq!(docker[0]["RepoTags"][0], "localhost/deskgate:0.1.0");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    UnpackedImage { dir, config }
}

/// Copies `file` into the image's `/etc/deskgate/test/`, readable by its user; returns the
/// path inside the image.
fn place(image: &UnpackedImage, file: &Path) -> PathBuf {
    let inside = PathBuf::from("/etc/deskgate/test").join(file.file_name().unwrap());
    let outside = image.rootfs().join(inside.strip_prefix("/").unwrap());
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::copy(file, &outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    inside
}

/// A plain HTTP server answering `GET <prefix>whoami` with `name` (a hub; a single-user server,
/// which serves under its own prefix).
fn http_target(dir: &Path, name: &str, prefix: &str) -> (u16, Killed) {
    let root = dir.join(name);
    let under = root.join(prefix.trim_start_matches('/'));
    std::fs::create_dir_all(&under).unwrap();
    std::fs::write(under.join("whoami"), name).unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (port, Killed(child))
}

fn jupyterhub(api: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jupyterhub_client.py");
    run(Command::new("python3")
        .arg(script)
        .arg(api)
        .arg(ADMIN_TOKEN)
        .args(args))
}

#[tokio::test(flavor = "multi_thread")]
async fn image_runs_as_its_user_serves_websockets_and_stands_in_for_chp() {
    require_root();
    let image = unpack(&artifacts().image);
    let c = &image.config["config"];
    assert_eq!(c["User"], "10001:10001");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/bin/deskgate"]));
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["-c", "/etc/deskgate/deskgate.yaml"])
    );

    // podman's and docker's loaders read it: containers/image (the library `podman load` is
    // built on, through skopeo) copies it both as an OCI archive and as a docker archive,
    // checking every digest.
    require("skopeo");
    for transport in ["oci-archive", "docker-archive"] {
        let copy = image.dir.path().join(transport);
        run(Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("{transport}:{}", artifacts().image.display()))
            .arg(format!("dir:{}", copy.display())));
    }

    // Its own files are enough: the loader, the libraries, the config it ships.
    let check =
        run(image
            .command("/usr/bin/deskgate")
            .args(["-t", "-c", "/etc/deskgate/deskgate.yaml"]));
    assert!(check.contains(": ok"), "{check}");

    // A WebSocket echo through its TLS listener to the test desktop.
    let fx = Fixture::new();
    let desktop = fx.desktop("alice");
    let port = free_port();
    let yaml = echo_config(
        port,
        desktop,
        &place(&image, &fx.edge_cert),
        &place(&image, &fx.edge_key),
        &place(&image, &fx.password_file),
    );
    std::fs::write(image.rootfs().join("etc/deskgate/test/echo.yaml"), yaml).unwrap();
    let edge = Deskgate::run(
        image
            .command("/usr/bin/deskgate")
            .args(["-c", "/etc/deskgate/test/echo.yaml"]),
        fx.path().join("image.log"),
        port,
    );
    echo_through(port).await;
    drop(edge);

    // configurable-http-proxy with the zero-to-jupyterhub proxy pod's flags, driven by
    // JupyterHub's ConfigurableHTTPProxy in external mode.
    let (hub_port, _hub) = http_target(fx.path(), "hub", "/");
    let (user_port, _user) = http_target(fx.path(), "alice-server", "/user/alice/");
    let (proxy_port, api_port) = (free_port(), free_port());
    let mut chp = image.command("configurable-http-proxy");
    chp.args([
        "--ip=::".to_string(),
        "--api-ip=::".to_string(),
        format!("--api-port={api_port}"),
        format!("--default-target=http://127.0.0.1:{hub_port}"),
        format!("--error-target=http://127.0.0.1:{hub_port}/hub/error"),
        format!("--port={proxy_port}"),
    ])
    .env("CONFIGPROXY_AUTH_TOKEN", ADMIN_TOKEN);
    // Ready on IPv4 loopback although it listens on `::`: dual-stack.
    let chp = Deskgate::run(&mut chp, fx.path().join("chp.log"), proxy_port);
    wait_port(api_port);
    let api = format!("http://127.0.0.1:{api_port}");
    let via = |path: &str| curl(&format!("http://127.0.0.1:{proxy_port}{path}"), &[]);
    assert_eq!(via("/whoami").body, "hub");
    // And on IPv6 loopback (the harness's curl pins 127.0.0.1, so curl is asked directly).
    let v6 = run(Command::new("curl")
        .args(["-s", "-g", "--max-time", "20"])
        .arg(format!("http://[::1]:{proxy_port}/whoami")));
    assert_eq!(v6, "hub");

    jupyterhub(
        &api,
        &[
            "add",
            "/user/alice/",
            &format!("http://127.0.0.1:{user_port}"),
        ],
    );
    let routes = jupyterhub(&api, &["get_all"]);
    assert!(routes.contains("/user/alice/"), "{routes}");
    assert_eq!(via("/user/alice/whoami").body, "alice-server");
    jupyterhub(&api, &["delete", "/user/alice/"]);
    // Back to the hub, which has no such page.
    assert_eq!(via("/user/alice/whoami").status, 404);
    drop(chp);
}

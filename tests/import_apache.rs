//! `deskgate import apache`: realistic hub vhosts convert to the YAML in the golden files
//! (`tests/apache/*.yaml`, regenerated with `UPDATE_GOLDEN=1`) that `deskgate -t` accepts, bad
//! input is named by FILE:LINE with nothing written, and a converted config answers the same
//! requests as Apache itself running the vhost it came from.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const RESOLVER: [&str; 4] = [
    "--resolver-url",
    "http://127.0.0.1:5020/api/apache/container-target/{name}",
    "--resolver-header",
    "X-API-Key: env:HUB_API_KEY",
];

fn import(args: &[&str], out: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(ROOT).arg("import").arg("apache").args(args);
    if let Some(o) = out {
        cmd.arg("-o").arg(o);
    }
    cmd.output().unwrap()
}

fn check_config(path: &Path) {
    let out = Command::new(BIN)
        .args(["-t", "--skip-files", "-c"])
        .arg(path)
        .env("HUB_API_KEY", "test-key")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains(": ok"),
        "deskgate -t on the import: {text}"
    );
}

#[test]
fn hub_vhosts_convert_to_the_golden_yaml_that_deskgate_accepts() {
    let cases: [(&str, &[&str], i32); 5] = [
        ("subdomain.conf", &RESOLVER, 0),
        // ProxyPass ... ! and a response header: skipped, so exit 2.
        ("path-routing.conf", &[], 2),
        // RequestHeader unset: skipped; the Upgrade workarounds are recognised and dropped.
        ("websocket-workarounds.conf", &[], 2),
        ("redirect.conf", &[], 0),
        ("include-tree/apache2.conf", &[], 0),
    ];
    for (file, args, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("deskgate.yaml");
        let source = format!("tests/apache/{file}");
        let mut all = vec![source.as_str()];
        all.extend_from_slice(args);
        let result = import(&all, Some(&out));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(code), "{file}: {stderr}");
        let yaml = std::fs::read_to_string(&out).unwrap();
        check_config(&out);
        let golden_name = file.replace("/apache2.conf", "").replace(".conf", "") + ".yaml";
        let golden = Path::new(ROOT).join("tests/apache").join(golden_name);
        let normalized = yaml.replace(&dir.path().display().to_string(), "OUT");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &normalized).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            normalized,
            expected,
            "{file}: differs from {}",
            golden.display()
        );
    }
}

#[test]
fn secrets_leave_the_yaml_and_a_missing_resolver_url_is_marked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hub.yaml");
    // Without --resolver-url: a placeholder and exit 2.
    let result = import(&["tests/apache/subdomain.conf"], Some(&out));
    assert_eq!(result.status.code(), Some(2));
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(yaml.contains("REPLACE-WITH-HUB-API"), "{yaml}");
    assert!(String::from_utf8_lossy(&result.stderr).contains("--resolver-url"));
    // The Basic password from the Apache file is in a 0600 file, never in the YAML.
    assert!(
        !yaml.contains("vnc-secret-pw") && !yaml.contains("a2FzbV91c2Vy"),
        "{yaml}"
    );
    let secret = dir.path().join("hub.secrets/basic-auth-1");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "vnc-secret-pw\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Without -o: an environment variable is named instead, and its value is printed nowhere.
    let result = import(
        &["tests/apache/subdomain.conf", RESOLVER[0], RESOLVER[1]],
        None,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
    );
    assert!(
        stdout.contains("password_env: DESKGATE_BASIC_AUTH_1"),
        "{stdout}"
    );
    assert!(!stdout.contains("vnc-secret-pw") && !stderr.contains("vnc-secret-pw"));
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deskgate.yaml");
    for (text, expected) in [
        (
            "<VirtualHost *:443>\n  ServerName a\n",
            "bad.conf:1: <VirtualHost> is not closed",
        ),
        (
            "<VirtualHost *:80>\n</VirtualHost>\n<Frobnicate x>\n</Frobnicate>\n",
            "bad.conf:3: unknown section <Frobnicate>",
        ),
        (
            "<VirtualHost *:80>\n  RequestHeader set X \"open\n</VirtualHost>\n",
            "bad.conf:2: unclosed \" quote",
        ),
    ] {
        let bad = dir.path().join("bad.conf");
        std::fs::write(&bad, text).unwrap();
        let result = import(&[bad.to_str().unwrap()], Some(&out));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{}/{expected}", dir.path().display())),
            "{stderr}"
        );
        assert!(!out.exists(), "nothing is written on failure");
    }
}

// ---- The differential test: Apache and deskgate, one vhost, the same requests.

/// The hub's subdomain vhost on loopback ports, as Apache runs it.
fn test_vhost(dir: &Path, fx: &Fixture, p80: u16, p443: u16, hub: u16) -> String {
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .encode(format!("{DESKTOP_USER}:{DESKTOP_PASSWORD}"))
    };
    format!(
        r#"<VirtualHost 127.0.0.1:{p80}>
    ServerName hub.test
    Redirect permanent / https://hub.test:{p443}/
</VirtualHost>
<VirtualHost 127.0.0.1:{p443}>
    ServerName hub.test
    ServerAlias desktop-*.hub.test
    SSLEngine on
    SSLCertificateFile {cert}
    SSLCertificateKeyFile {key}
    SSLProxyEngine on
    SSLProxyVerify none
    SSLProxyCheckPeerCN off
    SSLProxyCheckPeerName off
    ProxyPreserveHost On
    <If "%{{HTTP_HOST}} =~ /^desktop-/">
        RequestHeader set Authorization "Basic {basic}"
    </If>
    RewriteEngine On
    RewriteMap container "prg:{map}"
    RewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9_-]+)\.hub\.test [NC]
    RewriteCond ${{container:%1}} ^$
    RewriteRule ^ https://hub.test:{p443}/ [R=302,L]
    RewriteCond %{{HTTP:Upgrade}} websocket [NC]
    RewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9_-]+)\.hub\.test [NC]
    RewriteRule ^/(.*)$ wss://${{container:%1}}/$1 [P,L]
    RewriteCond %{{HTTP_HOST}} ^desktop-([a-z0-9_-]+)\.hub\.test [NC]
    RewriteRule ^/(.*)$ https://${{container:%1}}/$1 [P,L]
    ProxyPass / http://127.0.0.1:{hub}/ upgrade=websocket timeout=3600
</VirtualHost>
"#,
        cert = fx.edge_cert.display(),
        key = fx.edge_key.display(),
        map = dir.join("container-target.py").display(),
    )
}

/// Apache's own process settings around the vhost (an `Include`, so the importer follows it).
fn apache_main(dir: &Path, p80: u16, p443: u16) -> String {
    let mods = "mpm_event authz_core ssl socache_shmcb proxy proxy_http proxy_wstunnel headers rewrite alias";
    let loads: String = mods
        .split_whitespace()
        .map(|m| format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"))
        .collect();
    format!(
        "ServerRoot {d}\n{loads}PidFile {d}/apache.pid\nErrorLog {d}/apache-error.log\nLogLevel warn rewrite:trace2\nUser www-data\nGroup www-data\nListen 127.0.0.1:{p80}\nListen 127.0.0.1:{p443}\nServerName localhost\nMutex file:{d}\nDefaultRuntimeDir {d}\nSSLSessionCache shmcb:{d}/ssl_scache(512000)\nInclude vhost.conf\n",
        d = dir.display()
    )
}

/// The RewriteMap program: one desktop name per line in, `ip:port` or NULL out.
fn map_program(table: &[(&str, u16)]) -> String {
    let entries: Vec<String> = table
        .iter()
        .map(|(n, p)| format!("{n:?}: \"127.0.0.1:{p}\""))
        .collect();
    format!(
        "#!/usr/bin/python3 -u\nimport sys\nTABLE = {{{}}}\nfor line in sys.stdin:\n    print(TABLE.get(line.strip(), 'NULL'), flush=True)\n",
        entries.join(", ")
    )
}

/// The hub: pages, and the API deskgate's resolver asks (the map program's table as JSON).
fn hub_program(table: &[(&str, u16)]) -> String {
    let entries: Vec<String> = table
        .iter()
        .map(|(n, p)| format!("{n:?}: \"127.0.0.1:{p}\""))
        .collect();
    format!(
        r#"import http.server, json, sys
TABLE = {{{}}}
class Hub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        prefix = "/api/apache/container-target/"
        if self.path.startswith(prefix):
            target = TABLE.get(self.path[len(prefix):])
            status, body = (200, json.dumps({{"target": target}})) if target else (404, "null")
        else:
            status, body = 200, "hub page " + self.path
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hub).serve_forever()
"#,
        entries.join(", ")
    )
}

#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    location: String,
    body: String,
}

struct Request {
    what: &'static str,
    url: String,
}

fn ask_all(requests: &[Request]) -> Vec<Answer> {
    requests
        .iter()
        .map(|r| {
            let resp = curl(&r.url, &[]);
            Answer {
                status: resp.status,
                location: resp.header("location").unwrap_or_default(),
                body: resp.body.trim().chars().take(60).collect(),
            }
        })
        .collect()
}

async fn websocket_answer(p443: u16) -> Answer {
    match ws_connect(&format!("wss://desktop-alice.hub.test:{p443}/websockify")).await {
        Ok((mut ws, resp)) => Answer {
            status: resp.status().as_u16(),
            location: String::new(),
            body: format!(
                "{} / {}",
                ask(&mut ws, "whoami").await,
                ask(&mut ws, "echo me").await
            ),
        },
        Err(e) => Answer {
            status: 0,
            location: String::new(),
            body: e.to_string(),
        },
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn converted_config_answers_like_apache() {
    require("apache2");
    let fx = Fixture::new();
    let dir = fx.path().to_path_buf();
    let alice = fx.desktop("alice");
    let bob = fx.desktop("bob");
    let table = [("alice", alice.port()), ("bob", bob.port())];
    let (p80, p443, hub_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("vhost.conf"),
        test_vhost(&dir, &fx, p80, p443, hub_port),
    )
    .unwrap();
    std::fs::write(dir.join("apache2.conf"), apache_main(&dir, p80, p443)).unwrap();
    let map = dir.join("container-target.py");
    std::fs::write(&map, map_program(&table)).unwrap();
    std::fs::write(dir.join("hub.py"), hub_program(&table)).unwrap();
    // Apache's children and its map program run as www-data.
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("a+rX")
        .arg(&dir)
        .status();
    let _ = Command::new("chmod").arg("a+x").arg(&map).status();
    let _hub = Killed(
        Command::new("python3")
            .arg(dir.join("hub.py"))
            .arg(hub_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(hub_port);

    let host = |h: &str, port: u16, path: &str| format!("https://{h}:{port}{path}");
    let requests = vec![
        Request {
            what: "hub page",
            url: host("hub.test", p443, "/hello"),
        },
        Request {
            what: "hub asset",
            url: host("hub.test", p443, "/static/app.js?v=3"),
        },
        Request {
            what: "alice's desktop",
            url: host("desktop-alice.hub.test", p443, "/whoami"),
        },
        Request {
            what: "bob's desktop",
            url: host("desktop-bob.hub.test", p443, "/whoami"),
        },
        Request {
            what: "a desktop asset",
            url: host("desktop-bob.hub.test", p443, "/app/ui.js"),
        },
        Request {
            what: "no such desktop",
            url: host("desktop-nobody.hub.test", p443, "/whoami"),
        },
        Request {
            what: "plain http",
            url: format!("http://hub.test:{p80}/hello"),
        },
    ];

    // Apache first.
    let log = std::fs::File::create(dir.join("apache.out")).unwrap();
    let apache = Command::new("apache2")
        .arg("-f")
        .arg(dir.join("apache2.conf"))
        .arg("-DFOREGROUND")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut apache = Killed(apache);
    wait_port(p443);
    wait_port(p80);
    let mut from_apache = ask_all(&requests);
    from_apache.push(websocket_answer(p443).await);
    // SIGTERM: the parent stops its children (SIGKILL would leave them holding the ports).
    signal(apache.0.id(), "TERM");
    let _ = apache.0.wait();
    wait_until(
        std::time::Duration::from_secs(30),
        "Apache has let go of its ports",
        || {
            std::net::TcpListener::bind(("127.0.0.1", p443)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p80)).is_ok()
        },
    );

    // Then deskgate with what `deskgate import apache` made of the same files.
    let yaml_path = dir.join("imported.yaml");
    let resolver = format!("http://127.0.0.1:{hub_port}/api/apache/container-target/{{name}}");
    let result = import(
        &[
            dir.join("apache2.conf").to_str().unwrap(),
            "--resolver-url",
            &resolver,
        ],
        Some(&yaml_path),
    );
    assert_eq!(
        result.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let yaml = std::fs::read_to_string(&yaml_path).unwrap();
    let edge = Deskgate::start(&dir, "from-apache", &yaml, p443);
    let mut from_deskgate = ask_all(&requests);
    from_deskgate.push(websocket_answer(p443).await);
    drop(edge);

    let mut table_text = format!(
        "{:<18} | {:<40} | {:<40}\n",
        "request", "Apache", "deskgate"
    );
    let whats = requests.iter().map(|r| r.what).chain(["noVNC WebSocket"]);
    let mut differ = Vec::new();
    for (what, (a, d)) in whats.zip(from_apache.iter().zip(&from_deskgate)) {
        let show = |x: &Answer| {
            format!(
                "{} {}{}",
                x.status,
                x.body,
                if x.location.is_empty() {
                    String::new()
                } else {
                    format!(" -> {}", x.location)
                }
            )
        };
        table_text.push_str(&format!("{what:<18} | {:<40} | {:<40}\n", show(a), show(d)));
        // Apache's `Redirect permanent` is a 301, deskgate's redirect_https a 308 (both
        // permanent; 308 keeps the method): compare redirects by class and target.
        let same = if (300..400).contains(&a.status) {
            (300..400).contains(&d.status) && a.location == d.location
        } else {
            a == d
        };
        if !same {
            differ.push(what);
        }
    }
    println!("{table_text}");
    assert!(
        differ.is_empty(),
        "deskgate and Apache answer differently for {differ:?}:\n{table_text}"
    );
    assert!(
        from_apache[2].body.contains("alice") && from_apache[7].status == 101,
        "{table_text}"
    );
}

// ---- What the importer translates to that deskgate did not do before (issue 28, item 6-7).

/// A backend that answers like one behind Apache's ProxyPassReverse*: absolute redirects to
/// its own address, cookies for `localhost`; and shows the X-Forwarded-Port it was sent.
fn self_addressed_backend(port: u16) -> String {
    format!(
        r#"import http.server
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/login"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:{port}/after?x=1")
            self.send_header("Set-Cookie", "sid=1; Domain=localhost; Path=/; HttpOnly")
            self.send_header("Set-Cookie", "theme=dark")
            body = b""
        else:
            self.send_response(200)
            body = ("path=%s port=%s" % (self.path, self.headers.get("X-Forwarded-Port"))).encode()
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", {port}), App).serve_forever()
"#
    )
}

#[test]
fn locations_cookies_fixed_redirects_and_the_pid_file_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (edge, redirect, backend) = (free_port(), free_port(), free_port());
    std::fs::write(dir.path().join("app.py"), self_addressed_backend(backend)).unwrap();
    let _app = Killed(
        Command::new("python3")
            .arg(dir.path().join("app.py"))
            .spawn()
            .unwrap(),
    );
    wait_port(backend);
    let pid_file = dir.path().join("deskgate.pid");
    let yaml = format!(
        r#"listeners:
  - addr: "127.0.0.1:{edge}"
  - addr: "127.0.0.1:{redirect}"
    redirect_to: "https://hub.test:8443/"
upstreams:
  app: {{ servers: ["127.0.0.1:{backend}"] }}
routes:
  - path: /app/
    upstream: app
    strip_prefix: true
    rewrite_location: "http://127.0.0.1:{backend}/"
    cookie_domain: {{ localhost: hub.test }}
    cookie_path: {{ "/": "/app/" }}
  - path: /
    upstream: app
pid_file: {pid}
"#,
        pid = pid_file.display()
    );
    let mut d = Deskgate::start(dir.path(), "rewrites", &yaml, edge);
    wait_port(redirect);
    let r = curl(&format!("http://hub.test:{edge}/app/login"), &[]);
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("http://hub.test:{edge}/app/after?x=1").as_str())
    );
    let cookies: Vec<&str> = r
        .headers
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .map(|l| l[11..].trim())
        .collect();
    assert_eq!(
        cookies,
        ["sid=1; Domain=hub.test; Path=/app/; HttpOnly", "theme=dark"]
    );
    // A route without them passes the backend's answer as it is.
    let r = curl(&format!("http://hub.test:{edge}/login"), &[]);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("http://127.0.0.1:{backend}/after?x=1").as_str())
    );
    // X-Forwarded-Port: the listener's port.
    let r = curl(&format!("http://hub.test:{edge}/app/page"), &[]);
    assert_eq!(r.body, format!("path=/page port={edge}"));
    // redirect_to: a fixed origin, whatever Host the browser asked for.
    let r = curl(&format!("http://other.test:{redirect}/a/b?c=1"), &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://hub.test:8443/a/b?c=1")
    );
    // SIGTERM: the pid file goes with the process.
    assert!(pid_file.exists());
    signal(d.pid(), "TERM");
    wait_until(
        std::time::Duration::from_secs(30),
        "deskgate exits on SIGTERM",
        || !d.is_running(),
    );
    assert!(!pid_file.exists(), "{}", d.log_text());

    // Bad values are named by FILE:LINE:COL.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners:\n  - addr: \"127.0.0.1:1\"\n    redirect_to: \"https://a@b/\"\nupstreams:\n  app: { servers: [\"127.0.0.1:2\"] }\nroutes:\n  - path: /\n    upstream: app\n    rewrite_location: \"ftp://x/\"\n    cookie_path: { \"x\": \"/y\" }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["-t", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let name = bad.display().to_string();
    for expected in [
        format!("{name}:3:18: expected an origin such as `https://hub.example.org`"),
        format!("{name}:9:23: expected an http:// or https:// URL"),
        format!("{name}:10:5: expected paths starting with `/`"),
    ] {
        assert!(text.contains(&expected), "{expected} in {text}");
    }
}

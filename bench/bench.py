#!/usr/bin/env python3
"""deskgate side by side with nginx, HAProxy, Apache and Caddy (and the direct floor).

Each proxy gets one worker/thread pinned to core 0 (taskset); the load generators (wrk,
wsload) and the upstream (`deskgate desktop-sim`, HTTPS + WSS on one port like a desktop
container) share core 1. TLS on both sides, upstream certificate not verified, access logs
off for all. CPU is counted per unit of work from /proc (utime+stime of the proxy's whole
process tree), because on 2 cores the load generator caps raw throughput.
Every load is bounded in time and count, and targets 127.0.0.1 only.
"""
import argparse, json, os, re, resource, shutil, signal, socket, statistics, subprocess, sys, time, types
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# BENCH_DESKGATE / BENCH_WSLOAD: other builds (an A/B of two deskgate binaries, a quick check
# of this script with debug builds).
DESKGATE = Path(os.environ.get("BENCH_DESKGATE", ROOT / "target/release/deskgate"))
WSLOAD = Path(os.environ.get("BENCH_WSLOAD", ROOT / "target/release/wsload"))
HZ = os.sysconf("SC_CLK_TCK")
PEERS = ["nginx", "haproxy", "apache", "caddy"]
# deskgate builds of the same binary with other settings, run as systems of their own beside it
# (`--only deskgate,deskgate_nosteal,...`): the scheduling A/B of issue 33. `work_stealing:
# false` gives each worker a single-thread tokio runtime of its own (Pingora's NoStealRuntime),
# which has no LIFO slot; Pingora's default is one multi-thread runtime, which has one.
DESKGATE_VARIANTS = {"deskgate": "", "deskgate_nosteal": "work_stealing: false\n"}
BURST_BYTES = 64 * 1024  # the idle-after-a-burst line: one message of this size per WebSocket


_handed_out = set()


def free_port():
    """A free loopback port, never the same twice in one run (the kernel may repeat one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p not in _handed_out:
            _handed_out.add(p)
            return p


def wait_file(path, proc, limit=240):
    """Until wsload writes `path` (its sockets are open), it exits, or `limit` seconds pass."""
    end = time.time() + limit
    while not path.exists() and time.time() < end and proc.poll() is None:
        time.sleep(0.1)


def open_idle_websockets(system, name, sockets, args):
    """`wsload hold` with `sockets` WebSockets through `system`, waited for until they are open
    (and a second more for the proxy to settle): its process, ready and go files, the proxy's
    RSS before and with them open, and how many opened. wsload goes on when the go file is
    written; `args` are its other hold options (--seconds, --period, --burst-bytes)."""
    ready, go = system.work / f"{name}.ready", system.work / f"{name}.go"
    for f in (ready, go, ready.with_suffix(".ready.burst"), go.with_suffix(".go.burst")):
        f.unlink(missing_ok=True)
    rss_before = system.rss()
    proc = subprocess.Popen(["taskset", "-c", "1", str(WSLOAD), "--addr", f"127.0.0.1:{system.port}", "hold",
                             "--sockets", str(sockets), "--ready-file", str(ready), "--go-file", str(go), *args],
                            stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
    wait_file(ready, proc)
    time.sleep(1.0)
    return types.SimpleNamespace(proc=proc, ready=ready, go=go, rss_before=rss_before, rss_open=system.rss(),
                                 opened=int(ready.read_text()) if ready.exists() else 0)


def wait_port(port, proc=None, limit=30):
    end = time.time() + limit
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def raise_nofile():
    """As many open files as this machine allows (10,000 WebSockets need ~30,000)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tree(pid):
    """pid and all its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                children.setdefault(int(fields[1]), []).append(int(d))
            except (OSError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop(); out.append(p); todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    total = 0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / HZ


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def make_cert(work, kind):
    """A self-signed localhost certificate: `rsa` (RSA-2048) or `ecdsa` (P-256), as Let's
    Encrypt issues both; returns (cert, key, combined pem for HAProxy)."""
    d = work / kind
    d.mkdir(parents=True, exist_ok=True)
    cert, key, pem = d / "cert.pem", d / "key.pem", d / "combined.pem"
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pem.write_text(cert.read_text() + key.read_text())
    for f in (cert, key, pem):
        os.chmod(f, 0o644)
    os.chmod(d, 0o755)
    return cert, key, pem


# A new WSS connection three ways (issue 33): the browser leg and the proxy's upstream leg each
# make a full TLS handshake or resume a session. mode -> (browser resumes, upstream allows it).
HANDSHAKE_MODES = {"full": (False, False), "browser": (True, False), "both": (True, True)}


def hs_name(mode, kind, concurrency):
    """hs_both_rsa (8 handshakes at a time, as before) or hs_both_rsa_c256."""
    return f"hs_{mode}_{kind}" + ("" if concurrency == 8 else f"_c{concurrency}")


class ServeUpstream:
    """`wsload serve` on core 1: the handshake modes' desktop, refusing resumption or not; it
    counts its full and resumed handshakes, so each mode's upstream leg is checked."""

    def __init__(self, work, cert, key, refuse):
        self.port = free_port()
        self.stats = work / f"serve-{self.port}.json"
        cmd = ["taskset", "-c", "1", str(WSLOAD), "--addr", f"127.0.0.1:{self.port}", "serve", "--cert", str(cert), "--key", str(key),
               "--stats-file", str(self.stats)] + (["--refuse-resumption"] if refuse else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
        wait_port(self.port, self.proc)

    def counts(self):
        time.sleep(1.2)  # the file is rewritten once a second
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return {"full": 0, "resumed": 0}

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def handshake_modes(name, work, a):
    """CPU per new WSS connection for each handshake mode and certificate kind; one proxy start
    per (certificate, upstream): the refusing upstream serves `full` and `browser`."""
    res = {}
    for kind in a.certs:
        cert, key, pem = make_cert(work, kind)
        for refuse in (True, False):
            modes = [m for m, (_, up) in HANDSHAKE_MODES.items() if up != refuse]
            modes = [m for m in modes if any(hs_name(m, kind, c) in a.hs_selected for c in a.hs_concurrency)]
            if not modes:
                continue
            up = ServeUpstream(work, cert, key, refuse)
            system = System(name, work / f"hs-{kind}-{'refuse' if refuse else 'resume'}", up.port, cert, key, pem)
            system.work.mkdir(parents=True, exist_ok=True)
            try:
                system.start()
                # A few connections first so every resuming client holds a ticket.
                wsload(system, ["handshake", "--concurrency", "8", "--count", "64", "--seconds", "30"])
                for m in modes:
                    browser_resumes, _ = HANDSHAKE_MODES[m]
                    flag = [] if browser_resumes else ["--no-resume"]
                    for conc in a.hs_concurrency:
                        scn = hs_name(m, kind, conc)
                        if scn not in a.hs_selected:
                            continue
                        runs = []
                        for _ in range(a.repeat):
                            c0 = up.counts()
                            try:
                                r = measured(system, lambda: wsload(system, [*flag, "handshake", "--concurrency", str(conc), "--seconds", str(a.seconds)]))
                            except Exception as e:
                                runs.append({"error": str(e)}); continue
                            c1 = up.counts()
                            r["upstream_full"], r["upstream_resumed"] = c1["full"] - c0["full"], c1["resumed"] - c0["resumed"]
                            runs.append(r)
                        res[scn] = runs
                        print(f"  {name}: {scn} {runs}", flush=True)
            finally:
                system.stop()
                up.stop()
            time.sleep(2)
    return res


def deskgate_config(d, port, up_port, cert, key, threads, extra_yaml="", front_tls=True, up_tls=True, routes_yaml=""):
    """deskgate's config for the bench: one TLS listener, the upstream, `threads` workers.
    bench/smuggle.py and bench/autobahn turn either TLS side off."""
    cfg = d / "deskgate.yaml"
    listener_tls = f"""
    tls: {{ certs: [ {{ cert: "{cert}", key: "{key}" }} ] }}""" if front_tls else ""
    upstream_tls = ", tls: { verify: false, sni: localhost }" if up_tls else ""
    cfg.write_text(f"""threads: {threads}
pid_file: "{d}/deskgate.pid"
listeners:
  - addr: "127.0.0.1:{port}"{listener_tls}
upstreams:
  up: {{ servers: ["127.0.0.1:{up_port}"]{upstream_tls} }}
routes:
  - {{ path: "/", upstream: up }}
{routes_yaml}log: {{ level: warn }}
timeouts: {{ client_header: 60s }}
{extra_yaml}""")
    return cfg


class System:
    """One proxy (or the direct floor) on loopback. `front_tls`/`up_tls` off give the plain-HTTP
    variants the conformance and smuggling runs use (nginx, HAProxy and deskgate only)."""
    def __init__(self, name, work, up_port, cert, key, pem, front_tls=True, up_tls=True, binary=None, extra_yaml=""):
        self.name, self.work, self.up, self.cert, self.key, self.pem = name, work, up_port, cert, key, pem
        self.front_tls, self.up_tls = front_tls, up_tls
        self.binary = binary or DESKGATE
        self.extra_yaml = extra_yaml + DESKGATE_VARIANTS.get(name, "")  # more top-level YAML for deskgate
        self.port = up_port if name == "direct" else free_port()
        self.proc = None
        if not (front_tls and up_tls) and name not in ("deskgate", "nginx", "haproxy"):
            raise ValueError(f"{name}: only deskgate, nginx and HAProxy have plain-HTTP configs")

    def start(self):
        if self.name == "direct":
            return
        d = self.work / self.name
        d.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.name in DESKGATE_VARIANTS:
            cfg = deskgate_config(d, self.port, self.up, self.cert, self.key, threads=1,
                                  front_tls=self.front_tls, up_tls=self.up_tls, extra_yaml=self.extra_yaml)
            cmd = [str(self.binary), "-c", str(cfg)]
        elif self.name == "nginx":
            cfg = d / "nginx.conf"
            listen = (f"listen 127.0.0.1:{self.port} ssl;\n    ssl_certificate {self.cert}; ssl_certificate_key {self.key};"
                      if self.front_tls else f"listen 127.0.0.1:{self.port};")
            upstream = ("proxy_pass https://up;\n      proxy_ssl_verify off; proxy_ssl_server_name on; proxy_ssl_name localhost;"
                        if self.up_tls else "proxy_pass http://up;")
            cfg.write_text(f"""worker_processes 1;
worker_rlimit_nofile 200000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 60000; }}
http {{
  access_log off;
  # nginx closes a kept-alive client connection after 1,000 requests by default; the paced
  # scenarios keep 50 connections for the whole run (wrk reconnects, wsload does not).
  keepalive_requests 10000000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream up {{ server 127.0.0.1:{self.up}; keepalive 64; }}
  server {{
    {listen}
    location / {{
      {upstream}
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }}
  }}
}}
""")
            cmd = ["nginx", "-c", str(cfg), "-p", str(d)]
        elif self.name == "haproxy":
            cfg = d / "haproxy.cfg"
            cfg.write_text(f"""global
  nbthread 1
  maxconn 9900
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 3600s
  http-reuse always
frontend fe
  bind 127.0.0.1:{self.port}{f" ssl crt {self.pem} alpn http/1.1" if self.front_tls else ""}
  default_backend be
backend be
  server s1 127.0.0.1:{self.up}{" ssl verify none sni str(localhost)" if self.up_tls else ""} maxconn 9900
""")
            cmd = ["haproxy", "-db", "-f", str(cfg)]
        elif self.name == "apache":
            cfg = d / "apache2.conf"
            mods = "mpm_event authz_core ssl socache_shmcb proxy proxy_http proxy_wstunnel headers".split()
            loads = "\n".join(f"LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so" for m in mods)
            cfg.write_text(f"""ServerRoot {d}
{loads}
PidFile {d}/apache.pid
ErrorLog {d}/error.log
LogLevel warn
User www-data
Group www-data
Listen 127.0.0.1:{self.port}
ServerName localhost
ServerLimit 1
StartServers 1
ThreadLimit 256
ThreadsPerChild 256
MaxRequestWorkers 256
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
Mutex file:{d}
DefaultRuntimeDir {d}
SSLSessionCache shmcb:{d}/ssl_scache(512000)
<VirtualHost *:{self.port}>
  SSLEngine on
  SSLCertificateFile {self.cert}
  SSLCertificateKeyFile {self.key}
  SSLProxyEngine on
  SSLProxyVerify none
  SSLProxyCheckPeerCN off
  SSLProxyCheckPeerName off
  ProxyPreserveHost On
  ProxyPass / https://127.0.0.1:{self.up}/ upgrade=websocket keepalive=On timeout=3600
</VirtualHost>
""")
            shutil.chown(d, "www-data", "www-data")
            cmd = ["apache2", "-f", str(cfg), "-DFOREGROUND"]
        elif self.name == "caddy":
            cfg = d / "Caddyfile"
            cfg.write_text(f"""{{
  admin off
  auto_https off
  storage file_system {d}
}}
https://localhost:{self.port} {{
  bind 127.0.0.1
  tls {self.cert} {self.key}
  reverse_proxy https://127.0.0.1:{self.up} {{
    transport http {{
      tls_insecure_skip_verify
      tls_server_name localhost
    }}
  }}
}}
""")
            env.update(GOMAXPROCS="1", HOME=str(d), XDG_DATA_HOME=str(d), XDG_CONFIG_HOME=str(d))
            cmd = ["caddy", "run", "--config", str(cfg), "--adapter", "caddyfile"]
        log = open(d / "stdout.log", "w")
        self.proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=raise_nofile)
        wait_port(self.port, self.proc)
        time.sleep(0.3)  # let worker processes finish starting before counting their CPU

    def cpu(self):
        return cpu_seconds(self.proc.pid) if self.proc else None

    def rss(self):
        return rss_kib(self.proc.pid) if self.proc else None

    def stop(self):
        if self.proc:
            # Parents first: an nginx master that outlives a worker starts a new one, orphaned.
            for p in tree(self.proc.pid):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.wait()


def load(cmd, timeout):
    out = subprocess.run(["taskset", "-c", "1", *cmd], capture_output=True, text=True, timeout=timeout, preexec_fn=raise_nofile)
    return out.stdout


def wsload(system, args, timeout=300):
    text = load([str(WSLOAD), "--addr", f"127.0.0.1:{system.port}", *args], timeout)
    return json.loads(text.strip().splitlines()[-1])


def measured(system, fn):
    c0, t0 = system.cpu(), time.time()
    result = fn()
    c1 = system.cpu()
    result["cpu_s"] = (c1 - c0) if c0 is not None else None
    result["wall_s"] = time.time() - t0
    return result


def wrk_small(system, secs, conns=50):
    out = load(["wrk", "-t1", f"-c{conns}", f"-d{int(secs)}s", "--latency", f"https://localhost:{system.port}/whoami"], secs + 60)
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, u = float(m.group(1)), m.group(2)
        return v / 1000 if u == "us" else v * 1000 if u == "s" else v
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {"requests": reqs, "rps": rps, "p50_ms": lat(50), "p99_ms": lat(99), "errors": errors + non2xx}


def paced(system, a, rate=None):
    """Small HTTPS requests at a fixed rate (wsload counts from when each was due), in ms."""
    rate = round(rate or a.paced_rate)
    r = wsload(system, ["paced", "--rate", str(rate), "--connections", "50", "--seconds", str(a.seconds)])
    for k in ("p50", "p99", "p999"):
        r[f"{k}_ms"] = r[f"{k}_us"] / 1000
    return r


def load_rate(a, pct):
    """The rate the https_load<pct> scenarios offer: pct % of the base (deskgate's saturated
    https_small rate, measured first in this run, or --load-base-rps)."""
    if not a.load_base:
        raise RuntimeError("no base rate: deskgate's https_small did not run first (or pass --load-base-rps)")
    return a.load_base * pct / 100


def run_system(system, a):
    res = {"system": system.name}
    system.start()
    try:
        if not a.scenarios or "idle" in a.scenarios:
            # Hold first, on a fresh process: idle memory per WebSocket, then the hold itself.
            hold_secs = a.hold_seconds if system.name in ("deskgate", "direct") else a.peer_hold_seconds
            idle = open_idle_websockets(system, system.name, a.sockets,
                                        ["--seconds", str(hold_secs), "--period", "5", "--burst-bytes", str(BURST_BYTES)])
            p, rss0, rss1, opened = idle.proc, idle.rss_before, idle.rss_open, idle.opened
            burst_ready, burst_go = idle.ready.with_suffix(".ready.burst"), idle.go.with_suffix(".go.burst")
            idle.go.write_text("go")
            # Then one 64 KiB message through each (a desktop that was busy), and idle again.
            wait_file(burst_ready, p)
            time.sleep(1.0)
            rss2 = system.rss()
            burst_go.write_text("go")
            hold = json.loads(p.communicate(timeout=hold_secs + 240)[0].strip().splitlines()[-1])
            hold["seconds"] = hold_secs
            if rss0 is not None and opened:
                hold["kib_per_ws"] = (rss1 - rss0) / opened
                if rss2 is not None and burst_ready.exists():
                    hold["kib_per_ws_after_burst"] = (rss2 - rss0) / opened
            res["hold"] = hold
            print(f"  {system.name}: hold {hold}", flush=True)
            time.sleep(2)
        for scenario, fn in [
            ("https_small", lambda: wrk_small(system, a.seconds)),
            ("https_paced", lambda: paced(system, a)),
            ("ws_rtt", lambda: wsload(system, ["rtt", "--sockets", "100", "--seconds", str(a.seconds)])),
            ("ws_pingpong", lambda: wsload(system, ["rtt", "--sockets", "100", "--in-flight", "1", "--seconds", str(a.seconds)])),
            ("ws_stream", lambda: wsload(system, ["stream", "--seconds", str(a.seconds)])),
            ("handshake", lambda: wsload(system, ["handshake", "--concurrency", "8", "--seconds", str(a.seconds)])),
        ] + [
            # The tail below saturation (issue 33): the same rate offered to every system, a
            # share of deskgate's own saturated rate in this run.
            (f"https_load{p}", lambda p=p: paced(system, a, load_rate(a, p))) for p in a.load_pcts
        ] + [
            # The cost curve: the same small request with more kept-alive clients at once. A
            # proxy whose CPU per request grows with them is paying per connection, not per
            # request (issue 33: deskgate's pool of 128 idle upstream connections).
            (f"https_c{n}", lambda n=n: wrk_small(system, a.curve_seconds, n)) for n in a.conns
        ]:
            if a.scenarios and scenario not in a.scenarios:
                continue
            runs = []
            for _ in range(a.repeat):
                try:
                    runs.append(measured(system, fn))
                except Exception as e:  # one failed run is reported, not fatal
                    runs.append({"error": str(e)})
            res[scenario] = runs
            print(f"  {system.name}: {scenario} {runs}", flush=True)
            if scenario == "https_small" and system.name == "deskgate" and not a.load_base:
                done = [r["rps"] for r in runs if "rps" in r]
                a.load_base = statistics.median(done) if done else None
                a.load_base_from = "deskgate's https_small median in this run"
                print(f"  base rate for https_load*: {a.load_base}", flush=True)
    finally:
        system.stop()
    return res


def interleaved(names, work, up_port, cert, key, pem, a):
    """The tail scenarios with every system up at once (idle ones cost nothing) and each
    repeat going round the systems, in turn, so a slow minute of this shared machine falls on
    all of them rather than on whichever ran then: https_small first (each system's saturated
    rate; deskgate's is the base), then https_load<N> at N % of the base."""
    systems = [System(n, work / "interleaved", up_port, cert, key, pem) for n in names]
    res = {s.name: {"system": s.name} for s in systems}
    scenarios = [x for x in ("https_small", *(f"https_load{p}" for p in a.load_pcts)) if not a.scenarios or x in a.scenarios]
    try:
        for s in systems:
            s.start()
        for scenario in scenarios:
            for i in range(a.repeat):
                turn = systems[i % len(systems):] + systems[:i % len(systems)]
                for s in turn:
                    fn = (lambda: wrk_small(s, a.seconds)) if scenario == "https_small" else \
                         (lambda: paced(s, a, load_rate(a, int(scenario.removeprefix("https_load")))))
                    try:
                        r = measured(s, fn)
                    except Exception as e:
                        r = {"error": str(e)}
                    res[s.name].setdefault(scenario, []).append(r)
                    print(f"  {s.name}: {scenario} {r}", flush=True)
            if scenario == "https_small" and not a.load_base and "deskgate" in res:
                done = [r["rps"] for r in res["deskgate"].get("https_small", []) if "rps" in r]
                a.load_base = statistics.median(done) if done else None
                a.load_base_from = "deskgate's https_small median in this run"
                print(f"  base rate for https_load*: {a.load_base}", flush=True)
    finally:
        for s in systems:
            s.stop()
    return [res[n] for n in names]


def deskgate_only(work, up_port, cert, key, threads, cores, extra_yaml="", label=None, routes_yaml=""):
    """A deskgate with `threads` workers on `cores` (for the scaling and churn scenarios)."""
    s = System("deskgate", work / (label or f"deskgate-{threads}w"), up_port, cert, key, None)
    s.work.mkdir(parents=True, exist_ok=True)
    d = s.work / "deskgate"
    d.mkdir(parents=True, exist_ok=True)
    cfg = deskgate_config(d, s.port, up_port, cert, key, threads, extra_yaml, routes_yaml=routes_yaml)
    log = open(d / "stdout.log", "w")
    s.proc = subprocess.Popen(["taskset", "-c", cores, str(DESKGATE), "-c", str(cfg)], stdout=log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
    wait_port(s.port, s.proc)
    time.sleep(0.3)
    return s


def scaling(work, up_port, cert, key, a):
    """Small HTTPS requests with 1 and 2 deskgate workers (2 cores: the load shares them)."""
    out = {}
    for threads, cores in ((1, "0"), (2, "0,1")):
        s = deskgate_only(work, up_port, cert, key, threads, cores)
        try:
            runs = [measured(s, lambda: wrk_small(s, a.seconds)) for _ in range(a.repeat)]
        finally:
            s.stop()
        out[f"{threads}w"] = {"rps": statistics.median(r["rps"] for r in runs),
                              "cpu_us_per_request": statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in runs),
                              "p99_ms": statistics.median(r["p99_ms"] for r in runs)}
        print(f"  scaling {threads} worker(s): {out[f'{threads}w']}", flush=True)
    return out


def wrk_path(system, secs, path, conns=50):
    """wrk_small on another path (the route-table runs)."""
    out = load(["wrk", "-t1", f"-c{conns}", f"-d{int(secs)}s", f"https://localhost:{system.port}{path}"], secs + 60)
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "non2xx": non2xx}


def route_table(work, up_port, cert, key, a):
    """CPU per small request with N routes in the table besides `/` (issue 33's cost curve):
    static routes in the YAML, or runtime routes (as JupyterHub posts them) loaded from the
    state file; each request goes to the route in the middle, `/user/u<N/2>/whoami` (prefix
    stripped). The lookup is by hash along the path's `/` boundaries, so the line should be flat."""
    out = {}
    for kind in ("static", "runtime"):
        for n in a.route_counts:
            label = f"routes-{kind}-{n}"
            d = work / label
            d.mkdir(parents=True, exist_ok=True)
            routes_yaml, extra = "", ""
            if kind == "static":
                routes_yaml = "".join(f'  - {{ path: "/user/u{i}/", upstream: up, strip_prefix: true }}\n' for i in range(n))
            else:
                state = d / "routes.json"
                state.write_text(json.dumps({f"/user/u{i}": {"target": f"https://127.0.0.1:{up_port}"} for i in range(n)}))
                extra = f'state_file: "{state}"\ndynamic: {{ tls: {{ verify: false, sni: localhost }}, strip_prefix: true }}\n'
            s = deskgate_only(work, up_port, cert, key, 1, "0", extra, label, routes_yaml)
            try:
                rss = s.rss()
                runs = [measured(s, lambda: wrk_path(s, a.seconds, f"/user/u{n // 2}/whoami")) for _ in range(a.repeat)]
            finally:
                s.stop()
            out[label] = {"rps": statistics.median(r["rps"] for r in runs),
                          "cpu_us_per_request": statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in runs if r["requests"]),
                          "cpu_spread": (lambda v: max(v) - min(v))([r["cpu_s"] / r["requests"] * 1e6 for r in runs if r["requests"]]),
                          "non2xx": sum(r["non2xx"] for r in runs), "rss_kib_at_start": rss, "runs": runs}
            print(f"  {label}: {out[label]}", flush=True)
            time.sleep(1)
    return out


def idle_curve(system, a):
    """KiB per idle WebSocket at several counts, each on a freshly started proxy (the hold
    scenario measures one count, with traffic)."""
    out = {}
    for n in a.idle_counts:
        system.start()
        try:
            idle = open_idle_websockets(system, f"{system.name}-{n}", n, ["--seconds", "1", "--period", "0"])
            rss0, rss1, opened = idle.rss_before, idle.rss_open, idle.opened
            idle.go.write_text("go")
            hold = json.loads(idle.proc.communicate(timeout=240)[0].strip().splitlines()[-1])
            out[n] = {"opened": opened, "connect_failed": hold.get("connect_failed"), "rss_before_kib": rss0, "rss_open_kib": rss1,
                      "kib_per_ws": (rss1 - rss0) / opened if opened and rss0 is not None else None}
            print(f"  {system.name}: idle {n}: {out[n]}", flush=True)
        finally:
            system.stop()
        time.sleep(2)
    return out


def pool_ab(work, up_port, cert, key, a):
    """2,000 kept-alive HTTPS clients with Pingora's 128 idle upstream connections and with
    deskgate's default: what the pool's size costs per request when more clients are busy."""
    out = {}
    for label, extra in (("pool128", "upstream_keepalive_connections: 128\n"), ("default", "")):
        s = deskgate_only(work, up_port, cert, key, 1, "0", extra, f"deskgate-{label}")
        try:
            runs = [measured(s, lambda: wrk_small(s, a.curve_seconds, 2000)) for _ in range(a.repeat)]
        finally:
            s.stop()
        out[label] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        done = [r for r in runs if r["requests"]]  # none when 2,000 handshakes did not finish in time
        out[label]["cpu_us_per_request"] = statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in done) if done else None
        out[label]["errors"] = sum(r["errors"] for r in runs)
        print(f"  pool {label} at 2000 connections: {out[label]}", flush=True)
        time.sleep(3)
    return out


def capped(work, up_port, cert, key, a):
    """A desktop streaming 16 KiB frames as fast as it can through one WebSocket, capped by
    `websocket: { max_rate: 8MiB/s, burst: 1MiB }`, and the same without a cap: the rate the
    cap holds (the burst taken out) and CPU per MB either way."""
    out = {}
    cap, burst, secs = 8 * 1024 * 1024, 1024 * 1024, max(10, a.seconds)
    for label, extra in (("uncapped", ""), ("capped", "websocket: { max_rate: 8MiB/s, burst: 1MiB }\n")):
        s = deskgate_only(work, up_port, cert, key, 1, "0", extra, f"deskgate-{label}")
        try:
            runs = [measured(s, lambda: wsload(s, ["stream", "--seconds", str(secs)])) for _ in range(a.repeat)]
        finally:
            s.stop()
        v = {"mb_per_s": statistics.median(r["mb_per_s"] for r in runs),
             "cpu_ms_per_mb": statistics.median(r["cpu_s"] * 1e9 / r["bytes"] for r in runs if r.get("bytes"))}
        if label == "capped":
            # bytes/s after the first burst, against the cap (payload bytes; frame headers are 4 per 16 KiB)
            rates = [(r["bytes"] - burst) / (r["bytes"] / (r["mb_per_s"] * 1e6)) for r in runs if r.get("bytes")]
            v["of_cap_pct"] = statistics.median(x * 100.0 / cap for x in rates)
            v["of_cap_spread_pct"] = (max(rates) - min(rates)) * 100.0 / cap
        out[label] = v
        print(f"  stream {label}: {v}", flush=True)
        time.sleep(1)
    return out


def churn(work, up_port, cert, key, a):
    """RSS over 100,000 WebSocket open/close cycles and then ~1,000,000 small requests, after a
    warm-up: memory must come back, not grow."""
    s = deskgate_only(work, up_port, cert, key, 1, "0")
    try:
        wsload(s, ["handshake", "--concurrency", "8", "--count", "5000", "--seconds", "120"], timeout=200)
        load(["wrk", "-t1", "-c50", "-d5s", f"https://localhost:{s.port}/whoami"], 60)
        time.sleep(1)
        warm = s.rss()
        ws = wsload(s, ["handshake", "--concurrency", "8", "--count", str(a.churn_ws), "--seconds", "600"], timeout=700)
        time.sleep(1)
        after_ws = s.rss()
        out = load(["wrk", "-t1", "-c50", f"-d{a.churn_http_seconds}s", f"https://localhost:{s.port}/whoami"], a.churn_http_seconds + 60)
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        time.sleep(1)
        after_http = s.rss()
    finally:
        s.stop()
    res = {"rss_warm_kib": warm, "ws_cycles": ws.get("handshakes"), "ws_failed": ws.get("failed"), "rss_after_ws_kib": after_ws,
           "requests": reqs, "rss_after_requests_kib": after_http,
           "growth_pct": (max(after_ws, after_http) - warm) * 100.0 / warm if warm else None}
    print(f"  churn: {res}", flush=True)
    return res


def med(runs, key, per=None, scale=1.0):
    vals = []
    for r in runs:
        if key not in r and key != "cpu_s":
            continue
        if per:
            if r.get("cpu_s") is None or not r.get(per):
                continue
            vals.append(r["cpu_s"] * scale / r[per])
        else:
            vals.append(r[key])
    if not vals:
        return None, None
    return statistics.median(vals), (max(vals) - min(vals))


HS_LABEL = {"full": "full handshake on both legs", "browser": "browser leg resumed", "both": "both legs resumed"}


def summarize(results, a):
    """rows: (scenario, metric, better, {system: (median, spread)})"""
    rows = []
    def add(scn, label, better, key, per=None, scale=1.0):
        rows.append((scn, label, better, {r["system"]: med(r.get(scn, []), key, per, scale) for r in results}))
    add("https_small", "requests/s (50 conns)", "high", "rps")
    add("https_small", "p50 latency ms", "low", "p50_ms")
    add("https_small", "p99 latency ms", "low", "p99_ms")
    add("https_small", "proxy CPU us/request", "low", "cpu_s", "requests", 1e6)
    add("https_paced", "p50 latency ms at a fixed rate", "low", "p50_ms")
    add("https_paced", "p99 latency ms at a fixed rate", "low", "p99_ms")
    add("https_paced", "p99.9 latency ms at a fixed rate", "low", "p999_ms")
    add("ws_rtt", "messages/s (100 sockets)", "high", "messages_per_s")
    add("ws_rtt", "p50 round trip us", "low", "p50_us")
    add("ws_rtt", "p99 round trip us", "low", "p99_us")
    add("ws_rtt", "proxy CPU us/message", "low", "cpu_s", "messages", 1e6)
    add("ws_pingpong", "messages/s (100 sockets, 1 in flight)", "high", "messages_per_s")
    add("ws_pingpong", "p99 round trip us", "low", "p99_us")
    add("ws_pingpong", "proxy CPU us/message", "low", "cpu_s", "messages", 1e6)
    add("ws_stream", "MB/s (16 KiB frames)", "high", "mb_per_s")
    add("ws_stream", "proxy CPU ms/MB", "low", "cpu_s", "bytes", 1e9)
    add("handshake", "new WSS connections/s", "high", "per_s")
    add("handshake", "proxy CPU ms/connection", "low", "cpu_s", "handshakes", 1e3)
    for p in a.load_pcts:
        scn = f"https_load{p}"
        add(scn, f"offered requests/s ({p} % of deskgate's saturated rate)", "none", "offered_per_s")
        add(scn, f"p50 latency ms at {p} % load", "low", "p50_ms")
        add(scn, f"p99 latency ms at {p} % load", "low", "p99_ms")
        add(scn, f"p99.9 latency ms at {p} % load", "low", "p999_ms")
        add(scn, f"proxy CPU us/request at {p} % load", "low", "cpu_s", "requests", 1e6)
        # How busy each system was: its core's CPU over the run, and the offered rate over
        # its own saturated rate (https_small) in this run.
        for r in results:
            sat = med(r.get("https_small", []), "rps")[0]
            for x in r.get(scn, []):
                if x.get("requests") and x.get("achieved_per_s") and x.get("cpu_s") is not None:
                    x["core_busy_pct"] = x["cpu_s"] * 100 / (x["requests"] / x["achieved_per_s"])
                if sat and x.get("offered_per_s"):
                    x["of_own_saturation_pct"] = x["offered_per_s"] * 100 / sat
        add(scn, f"proxy core busy % at {p} % load", "none", "core_busy_pct")
        add(scn, f"offered / own saturated rate % at {p} % load", "none", "of_own_saturation_pct")
    for k in a.certs:
        for m in HANDSHAKE_MODES:
            for c in a.hs_concurrency:
                scn = hs_name(m, k, c)
                if scn in a.hs_selected:
                    add(scn, f"new WSS connections/s ({HS_LABEL[m]}, {k.upper()}, {c} at once)", "high", "per_s")
                    add(scn, f"proxy CPU ms/connection ({HS_LABEL[m]}, {k.upper()}, {c} at once)", "low", "cpu_s", "handshakes", 1e3)
    for n in a.conns:
        add(f"https_c{n}", f"requests/s ({n} conns)", "high", "rps")
        add(f"https_c{n}", f"p99 latency ms ({n} conns)", "low", "p99_ms")
        add(f"https_c{n}", f"proxy CPU us/request ({n} conns)", "low", "cpu_s", "requests", 1e6)
    for r in results:
        h = r.get("hold", {})
        r["idle"] = [{k: h[k] for k in ("kib_per_ws", "kib_per_ws_after_burst") if k in h}] if "kib_per_ws" in h else []
    add("idle", "KiB per idle WebSocket", "low", "kib_per_ws")
    add("idle", "KiB per idle WebSocket after one 64 KiB message", "low", "kib_per_ws_after_burst")
    return rows


def autogroup():
    """This process's autogroup and its nice (`/autogroup-12 nice -19`), or why there is none."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "none (no /proc/self/autogroup)"


def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"


def write_report(results, rows, lookup, a, out_dir, extras=None):
    extras = extras or {}
    systems = [r["system"] for r in results]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    now = datetime.now(timezone.utc)
    lines = [f"# deskgate benchmark, {now:%Y-%m-%d %H:%M} UTC", "",
             f"Commit `{commit}`{' (with uncommitted changes)' if dirty else ''}. {os.cpu_count()} cores; each proxy on core 0 with one worker/thread, "
             f"load generator and upstream on core 1; TLS on both sides. Median of {a.repeat} runs of {a.seconds} s (spread = max - min in brackets). "
             f"Ratio = deskgate / best peer ({', '.join(PEERS)}); for 'high' metrics above 1 leads, for 'low' metrics below 1 leads. "
             f"https_paced: {a.paced_rate:,} requests/s offered to every system over 50 connections, latency counted from when each request was due; "
             f"ws_rtt: each of 100 sockets sends its next message when its echo is back; ws_pingpong: the same sockets take turns, one message in flight at a time. "
             f"Load average (1, 5, 15 min) before {', '.join(f'{x:.1f}' for x in a.load_before)}, after {', '.join(f'{x:.1f}' for x in a.load_after)} "
             f"({os.cpu_count()} cores; above {os.cpu_count()} other work shared the cores, so compare ratios within this run). "
             f"Scheduling group: {autogroup()} (with kernel.sched_autogroup_enabled=1, nice orders processes only within a session: "
             f"see docs/benchmarks.md, 'Round three, continued').", "",
             *( [f"https_load<N>: N % of {a.load_base:,.0f} requests/s ({a.load_base_from}), offered identically to every system (wsload paced, 50 connections, "
                 f"latency from when each request was due); 'proxy core busy %' is the proxy's CPU time over the run's wall time, 'offered / own saturated rate' "
                 f"the offered rate over that system's own https_small rate in this run.", ""] if a.load_base and a.load_pcts else []),
             *( [f"deskgate_nosteal: the same deskgate binary with `work_stealing: false` (a single-thread tokio runtime per worker: no LIFO slot, no stealing); "
                 f"its last column is deskgate_nosteal / deskgate.", ""] if "deskgate_nosteal" in systems else []),
             "| scenario | metric | " + " | ".join(systems) + " | deskgate / best peer |" + (" nosteal / deskgate |" if "deskgate_nosteal" in systems else ""),
             "|---|---|" + "---|" * len(systems) + "---|" + ("---|" if "deskgate_nosteal" in systems else "")]
    table = []
    for scn, label, better, vals in rows:
        if all(vals.get(x, (None, None))[0] is None for x in systems):
            continue  # a scenario this run skipped (--scenarios)
        cells = []
        for s in systems:
            m, sp = vals.get(s, (None, None))
            cells.append(fmt(m) + (f" ({fmt(sp)})" if sp else ""))
        peers = [vals[p][0] for p in PEERS if p in vals and vals[p][0] is not None]
        best = (max(peers) if better == "high" else min(peers)) if peers and better != "none" else None
        dg = vals.get("deskgate", (None, None))[0]
        ratio = dg / best if dg is not None and best else None
        ns = vals.get("deskgate_nosteal", (None, None))[0]
        ns_ratio = ns / dg if ns is not None and dg else None
        if scn == "ws_stream" and "MB/s" in label and vals.get("direct", (None,))[0]:
            extra = f"; {dg / vals['direct'][0]:.2f}x direct" if dg else ""
        else:
            extra = ""
        lines.append(f"| {scn} | {label} | " + " | ".join(cells) + f" | {fmt(ratio) if ratio else '-'}{extra} |"
                     + (f" {fmt(ns_ratio) if ns_ratio else '-'} |" if "deskgate_nosteal" in systems else ""))
        table.append({"scenario": scn, "metric": label, "better": better, "values": {s: vals.get(s, (None, None))[0] for s in systems},
                      "spread": {s: vals.get(s, (None, None))[1] for s in systems}, "best_peer": best, "ratio_to_best_peer": ratio,
                      "nosteal_to_deskgate": ns_ratio})
    if any(r.get("hold") for r in results):
        lines += ["", f"Hold: {a.sockets} WebSockets, one 64-byte message each every 5 s ({a.hold_seconds} s for deskgate and direct, {a.peer_hold_seconds} s for peers):", "",
                  "| system | opened | connect failed | dropped | messages sent | lost |", "|---|---|---|---|---|---|"]
        for r in results:
            h = r.get("hold", {})
            lines.append(f"| {r['system']} | {h.get('opened', '-')} | {h.get('connect_failed', '-')} | {h.get('dropped', '-')} | {h.get('sent', '-')} | {h.get('lost', '-')} |")
    hs = [x for x in a.hs_selected if any(x in r for r in results)]
    if hs:
        lines += ["", "Handshake modes, checked: resumed handshakes on the browser leg (wsload) and on the upstream leg (counted by the `wsload serve` desktop), over all runs:", "",
                  "| scenario | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
        for scn in hs:
            cells = []
            for r in results:
                runs = [x for x in r.get(scn, []) if "handshakes" in x]
                n = sum(x["handshakes"] for x in runs)
                b = sum(x.get("resumed", 0) for x in runs)
                uf, ur = sum(x.get("upstream_full", 0) for x in runs), sum(x.get("upstream_resumed", 0) for x in runs)
                cells.append(f"browser {b}/{n}, upstream {ur}/{uf + ur}" if n else "-")
            lines.append(f"| {scn} | " + " | ".join(cells) + " |")
    if "scaling" in extras:
        sc = extras["scaling"]
        lines += ["", "deskgate workers (`threads:`), small HTTPS requests; with 2 workers the proxy, wrk and the upstream share both cores:", "",
                  "| workers | requests/s | proxy CPU us/request | p99 ms |", "|---|---|---|---|"]
        for k in ("1w", "2w"):
            v = sc.get(k, {})
            lines.append(f"| {k[0]} | {fmt(v.get('rps'))} | {fmt(v.get('cpu_us_per_request'))} | {fmt(v.get('p99_ms'))} |")
    if "pool" in extras:
        po = extras["pool"]
        lines += ["", "deskgate, one worker, 2,000 kept-alive HTTPS clients (wrk -c2000): Pingora's 128 idle upstream connections vs `upstream_keepalive_connections`' default:", "",
                  "| pool | requests/s | proxy CPU us/request | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
        for k, name in (("pool128", "128 (Pingora's default)"), ("default", "8192 (deskgate's default)")):
            v = po.get(k, {})
            lines.append(f"| {name} | {fmt(v.get('rps'))} | {fmt(v.get('cpu_us_per_request'))} | {fmt(v.get('p50_ms'))} | {fmt(v.get('p99_ms'))} | {v.get('errors', '-')} |")
    if "capped" in extras:
        c = extras["capped"]
        lines += ["", "deskgate, one worker, one WebSocket streaming 16 KiB frames as fast as the desktop sends, with `websocket: { max_rate: 8MiB/s, burst: 1MiB }` and without:", "",
                  "| stream | MB/s | of the cap (burst taken out) | proxy CPU ms/MB |", "|---|---|---|---|",
                  f"| uncapped | {fmt(c.get('uncapped', {}).get('mb_per_s'))} | - | {fmt(c.get('uncapped', {}).get('cpu_ms_per_mb'))} |",
                  f"| capped at 8 MiB/s | {fmt(c.get('capped', {}).get('mb_per_s'))} | {fmt(c.get('capped', {}).get('of_cap_pct'))} % (spread {fmt(c.get('capped', {}).get('of_cap_spread_pct'))}) | {fmt(c.get('capped', {}).get('cpu_ms_per_mb'))} |"]
    if "churn" in extras:
        c = extras["churn"]
        lines += ["", "Churn (deskgate, one worker): RSS after a warm-up, after WebSocket open/close cycles, after small requests:", "",
                  "| RSS warm KiB | WebSocket cycles (failed) | RSS after KiB | requests | RSS after KiB | growth over warm |", "|---|---|---|---|---|---|",
                  f"| {c.get('rss_warm_kib')} | {c.get('ws_cycles')} ({c.get('ws_failed')}) | {c.get('rss_after_ws_kib')} | {c.get('requests')} | {c.get('rss_after_requests_kib')} | {fmt(c.get('growth_pct'))} % |"]
    if "routes" in extras:
        ro = extras["routes"]
        lines += ["", "deskgate, one worker, small HTTPS requests (wrk, 50 connections) to the route in the middle of a table of N routes besides `/` "
                  "(static: in the YAML; runtime: loaded from the state file, as the hub's API leaves them):", "",
                  "| routes | kind | requests/s | proxy CPU us/request (spread) | RSS at start KiB | non-2xx |", "|---|---|---|---|---|---|"]
        for kind in ("static", "runtime"):
            for n in a.route_counts:
                v = ro.get(f"routes-{kind}-{n}", {})
                lines.append(f"| {n:,} | {kind} | {fmt(v.get('rps'))} | {fmt(v.get('cpu_us_per_request'))} ({fmt(v.get('cpu_spread'))}) | {v.get('rss_kib_at_start', '-')} | {v.get('non2xx', '-')} |")
    if any(r.get("idle_curve") for r in results):
        lines += ["", "KiB per idle WebSocket by count (each count on a freshly started proxy, no message sent; RSS of the proxy's process tree):", "",
                  "| system | " + " | ".join(f"{n:,} sockets" for n in a.idle_counts) + " |", "|---|" + "---|" * len(a.idle_counts)]
        for r in results:
            ic = r.get("idle_curve")
            if ic:
                cells = [f"{fmt(ic[n]['kib_per_ws'])} ({ic[n]['opened']} open)" if ic.get(n) else "-" for n in a.idle_counts]
                lines.append(f"| {r['system']} | " + " | ".join(cells) + " |")
    if lookup:
        lines += ["", "Route lookup (criterion, `bench/benches/route_lookup.rs`), median ns per lookup:", "", "| lookup | 10 routes | 10,000 routes |", "|---|---|---|"]
        for kind in ("runtime_route", "desktop_path", "desktop_host"):
            lines.append(f"| {kind} | {fmt(lookup.get(f'{kind}/10'))} | {fmt(lookup.get(f'{kind}/10000'))} |")
    stamp = now.strftime("%Y-%m-%d") + (f"-{a.label}" if a.label else "")
    (out_dir / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    (out_dir / f"{stamp}.json").write_text(json.dumps({"date": now.isoformat(), "commit": commit, "settings": vars(a), "table": table, "raw": results, "extras": extras, "route_lookup_ns": lookup}, indent=1, default=str))
    print("\n".join(lines))
    print(f"\nwrote {out_dir / (stamp + '.md')} and .json")


def route_lookup():
    out = subprocess.run(["cargo", "bench", "--bench", "route_lookup", "--", "--noplot"], cwd=ROOT, capture_output=True, text=True).stdout
    res = {}
    for name, val, unit in re.findall(r"route_lookup/(\S+)\s+time:\s+\[\S+ \S+ ([\d.]+) (ns|µs|us)", out):
        res[name] = float(val) * (1000 if unit != "ns" else 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    # 10,000 is the goal; this sandbox caps open files per process at 20,000 (hard limit), and a
    # proxy holding N WebSockets needs 2N: 9,500 fits everywhere.
    ap.add_argument("--sockets", type=int, default=9500)
    ap.add_argument("--hold-seconds", type=int, default=60)
    ap.add_argument("--peer-hold-seconds", type=int, default=20)
    # Tail latency when the proxy is not saturated: one fixed rate for every system, about half
    # of deskgate's saturated rate on this machine (and less than half of nginx's and HAProxy's,
    # so the comparison favours the peers); Apache and Caddy saturate near it.
    ap.add_argument("--paced-rate", type=int, default=12000, help="requests/s of the https_paced scenario")
    ap.add_argument("--load-pcts", default="50,80", help="https_load<N> scenarios: N %% of the base rate, offered to every system")
    ap.add_argument("--load-base-rps", type=float, default=0,
                    help="base rate of https_load<N> (default: deskgate's https_small median, measured first in this run)")
    ap.add_argument("--hs-concurrency", default="8", help="handshakes at once in the handshake modes (8: hs_both_rsa; others: hs_both_rsa_c256)")
    ap.add_argument("--route-counts", default="10,1000,10000", help="routes in the table for `--extras routes` (static and runtime)")
    ap.add_argument("--idle-counts", default="", help="idle_curve scenario: KiB per idle WebSocket at these counts (e.g. 1000,5000,9900)")
    ap.add_argument("--interleave", action="store_true",
                    help="https_small and https_load<N> only, all systems up at once, each repeat going round them in turn")
    ap.add_argument("--label", default="", help="suffix of the report's name: bench/results/<date>-<label>.md")
    ap.add_argument("--only", default="direct,deskgate,nginx,haproxy,apache,caddy",
                    help="systems, in order (deskgate_nosteal: deskgate with `work_stealing: false`)")
    ap.add_argument("--no-lookup", action="store_true")
    ap.add_argument("--no-deskgate-extras", action="store_true", help="skip the worker scaling and churn runs")
    ap.add_argument("--conns", default="500,2000", help="kept-alive client counts for the cost curve (besides 50)")
    # wrk opens every connection with a full TLS handshake (no resumption): 2,000 of them with
    # RSA-2048 cost a proxy several seconds of CPU, so a 5 s window measures handshakes.
    ap.add_argument("--curve-seconds", type=int, default=15, help="seconds of each cost-curve run (https_c<N> and the pool A/B)")
    ap.add_argument("--scenarios", default="", help="run only these scenarios (comma-separated names, e.g. https_small,https_c2000); default all")
    ap.add_argument("--extras", default="scaling,pool,capped,churn", help="deskgate-only extra runs")
    ap.add_argument("--certs", default="rsa,ecdsa", help="certificate kinds for the handshake modes (hs_full_rsa, hs_browser_ecdsa, ...)")
    ap.add_argument("--churn-ws", type=int, default=100000, help="WebSocket open/close cycles in the churn run")
    ap.add_argument("--churn-http-seconds", type=int, default=90, help="seconds of small requests in the churn run (about 1,000,000)")
    a = ap.parse_args()
    a.conns = [int(n) for n in a.conns.split(",") if n]
    a.scenarios = [x for x in a.scenarios.split(",") if x]
    a.extras = [x for x in a.extras.split(",") if x]
    a.certs = [x for x in a.certs.split(",") if x]
    a.load_pcts = [int(x) for x in a.load_pcts.split(",") if x]
    a.route_counts = [int(x) for x in a.route_counts.split(",") if x]
    a.idle_counts = [int(x) for x in a.idle_counts.split(",") if x]
    if a.scenarios:
        a.load_pcts = [p for p in a.load_pcts if f"https_load{p}" in a.scenarios]
    a.load_base, a.load_base_from = a.load_base_rps or None, "--load-base-rps"
    only = a.only.split(",")
    if a.load_pcts and not a.load_base:
        # The base is deskgate's saturated rate: deskgate runs first, https_small included.
        if "deskgate" not in only:
            ap.error("https_load<N> needs deskgate in --only or --load-base-rps")
        a.only = ",".join(["deskgate"] + [x for x in only if x != "deskgate"])
        if a.scenarios and "https_small" not in a.scenarios:
            a.scenarios.append("https_small")
    a.hs_concurrency = [int(x) for x in a.hs_concurrency.split(",") if x]
    hs_all = [hs_name(m, k, c) for k in a.certs for m in HANDSHAKE_MODES for c in a.hs_concurrency]
    # "handshake_modes" in --scenarios selects all of them
    a.hs_selected = hs_all if not a.scenarios or "handshake_modes" in a.scenarios else [x for x in hs_all if x in a.scenarios]
    raise_nofile()
    a.load_before = os.getloadavg()
    out_dir = ROOT / "bench/results"
    work = out_dir / "tmp"
    shutil.rmtree(work, ignore_errors=True); work.mkdir(parents=True)
    os.chmod(work, 0o755)
    cert, key, pem = work / "cert.pem", work / "key.pem", work / "combined.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pem.write_text(cert.read_text() + key.read_text())
    for f in (cert, key, pem):
        os.chmod(f, 0o644)
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", "1", str(DESKGATE), "desktop-sim", "--listen", f"127.0.0.1:{up_port}", "--name", "up", "--cert", str(cert), "--key", str(key)],
                                stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
    wait_port(up_port, upstream)
    results = []
    try:
        if a.interleave:
            results = interleaved(a.only.split(","), work, up_port, cert, key, pem, a)
        for name in ([] if a.interleave else a.only.split(",")):
            print(f"== {name}", flush=True)
            results.append(run_system(System(name, work, up_port, cert, key, pem), a))
            time.sleep(3)  # let TIME_WAIT sockets from handshakes settle between systems
            if a.idle_counts and (not a.scenarios or "idle_curve" in a.scenarios):
                results[-1]["idle_curve"] = idle_curve(System(name, work / "idle-curve", up_port, cert, key, pem), a)
            if a.hs_selected:
                results[-1].update(handshake_modes(name, work, a))
                time.sleep(3)
    finally:
        upstream.kill()
        upstream.wait()
    extra = {}
    if "deskgate" in a.only.split(",") and not a.no_deskgate_extras:
        # A fresh port: the first upstream's may still be held (it refused to bind after the
        # 9,900-socket idle runs).
        up_port = free_port()
        upstream = subprocess.Popen(["taskset", "-c", "1", str(DESKGATE), "desktop-sim", "--listen", f"127.0.0.1:{up_port}", "--name", "up", "--cert", str(cert), "--key", str(key)],
                                    stdout=subprocess.DEVNULL, preexec_fn=raise_nofile)
        wait_port(up_port, upstream)
        try:
            print("== deskgate scaling and churn", flush=True)
            if "scaling" in a.extras:
                extra["scaling"] = scaling(work, up_port, cert, key, a)
            if "pool" in a.extras:
                extra["pool"] = pool_ab(work, up_port, cert, key, a)
            if "capped" in a.extras:
                extra["capped"] = capped(work, up_port, cert, key, a)
            if "churn" in a.extras:
                extra["churn"] = churn(work, up_port, cert, key, a)
            if "routes" in a.extras:
                extra["routes"] = route_table(work, up_port, cert, key, a)
        finally:
            upstream.kill()
    lookup = {} if a.no_lookup else route_lookup()
    a.load_after = os.getloadavg()
    write_report(results, summarize(results, a), lookup, a, out_dir, extra)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Instructions per unit of work, counted by callgrind, and where they go (issue 33).

Runs a proxy (deskgate's release binary, or nginx) under `valgrind --tool=callgrind` twice,
driving N1 and then N2 units of work through it (new WSS connections in one of the three
handshake modes, small HTTPS requests, 64-byte WebSocket messages or streamed MB), and divides
the difference of the two profiles by the difference of the units: start-up, warm-up and
shutdown cancel out. Instruction counts do not move with the machine's load, so they decide
A/B questions where CPU time on this shared machine cannot.

  bench/callgrind.py --work handshake --mode full --cert rsa [--system nginx] [--binary PATH]

Prints the total per unit and the self cost grouped by what it is for (key exchange,
signature, ...), and writes the JSON next to the callgrind files under target/callgrind.
Loopback only; every load is bounded in count and time.
"""
import argparse, json, re, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same configs, certificates and upstream as bench/run)

# Self cost of a function -> group; the first pattern that matches the demangled name wins.
# ring's assembly and C keep their own symbols (ring_core_0_17_*__name), so the crypto
# primitives are visible even where rustls inlined everything around them.
GROUPS = [
    ("key exchange (X25519 / P-256 ECDH)", r"x25519|curve25519|ecdh|agreement"),
    ("signature (RSA / ECDSA sign, verify)", r"bn_mul_mont|bn_sqr|mul4x_internal|bn_post4x|bn_power5|mont5|bignum|bn_mod|bn_from_mont|bn_mul4x|bn_power5|rsaz|mulx4x|sqrx8x|LIMBS_|limbs_|ring::rsa|ring::arithmetic|bigint|ecdsa|p256|nistz256|ring::ec::suite_b|scalar_mul|ring::signature"),
    ("ticket encryption (ChaCha20-Poly1305)", r"chacha|poly1305|Ticketer|ticketer|TicketSwitcher|TicketRotator"),
    ("record encryption (AES-GCM)", r"aes_hw|aesni|gcm_|ghash|vpaes|aes_nohw|ring::aead::aes"),
    ("key schedule and transcript (SHA-2, HMAC, HKDF)", r"sha256|sha512|sha_block|ring::digest|hmac|hkdf|key_schedule|KeySchedule|transcript|Transcript"),
    ("randomness", r"getrandom|ring::rand|rand::"),
    ("certificate and handshake encoding (rustls codec)", r"rustls::msgs|CertificateEntry|rustls_pki_types|webpki|x509|(?<![A-Za-z])der::"),
    ("rustls state machine and record layer", r"rustls::"),
    ("upstream connect and pool (pingora connectors)", r"pingora_core::connectors|pingora_pool|connect_with|l4::connect"),
    ("Pingora per-connection and request machinery", r"pingora|deskgate"),
    ("HTTP parsing (httparse, http crate)", r"httparse|http::header|http::uri|http::"),
    ("WebSocket (tungstenite-free tunnel is deskgate's)", r"tungstenite"),
    ("allocator (jemalloc; glibc malloc for nginx)", r"je_|jemalloc|_rjem_|tikv_jemalloc|malloc|free|realloc|calloc"),
    ("memcpy/memmove/memset", r"mem(cpy|move|set|cmp)|__memcpy|__memmove|__memset|bcmp"),
    ("tokio runtime and timers", r"tokio|mio::"),
    ("libc and the dynamic loader", r"libc|ld-linux|_dl_|\?\?\?:0x"),
]


# Inclusive cost of the phases of a new connection: the largest inclusive count among the
# functions matching each pattern (async fns keep their `{{closure}}` poll functions).
PHASES = [
    ("browser leg: TLS accept (Pingora listener)", r"listeners::tls::rustls::Acceptor::tls_handshake|protocols::tls::rustls::server::handshake"),
    ("upstream leg: connect + TLS (Pingora connector)", r"connectors::TransportConnector::new_stream|connectors::do_connect\b|connectors::tls::rustls::connect"),
    ("upstream leg: TLS only", r"connectors::tls::rustls::connect"),
    ("request phases (deskgate's ProxyHttp + Pingora proxy)", r"pingora_proxy::HttpProxy<SV,C>::process_request|pingora_proxy::HttpProxy<SV,C>::process_new_http"),
    ("WebSocket tunnel (deskgate)", r"deskgate::edge::tunnel"),
]


def annotated(out_file, inclusive):
    """(Ir, `file:function`) for each function callgrind_annotate lists, self or inclusive cost."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}",
                           "--auto=no", str(out_file)], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(\S.*)$", line)
        if m:
            yield int(m.group(1).replace(",", "")), m.group(2)


def inclusive_phases(out_file):
    best = {}
    for ir, entry in annotated(out_file, inclusive=True):
        for phase, pat in PHASES:
            if re.search(pat, entry):
                best[phase] = max(best.get(phase, 0), ir)
    return best


def classify(entry):
    """entry is `file:function`; the function's name decides, else its file (ring's C)."""
    file, _, func = entry.partition(":")
    for part in (func, file):
        for group, pat in GROUPS:
            if re.search(pat, part):
                return group
    return "other"


def self_costs(out_file):
    """{function: self Ir} from callgrind_annotate."""
    costs = {}
    for ir, entry in annotated(out_file, inclusive=False):
        if ":" not in entry:
            continue
        name = re.sub(r"\s+\[.*\]$", "", entry)
        costs[name] = costs.get(name, 0) + ir
    return costs


def total_ir(out_file):
    for line in Path(out_file).read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def nginx_conf(d, port, up_port, cert, key):
    cfg = d / "nginx.conf"
    cfg.write_text(f"""worker_processes 1;
master_process off;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{
      proxy_pass https://up;
      proxy_ssl_verify off; proxy_ssl_server_name on; proxy_ssl_name localhost;
      proxy_http_version 1.1;
      proxy_set_header Host $host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
    }}
  }}
}}
""")
    return ["nginx", "-c", str(cfg), "-p", str(d)]


class Proxy:
    def __init__(self, system, binary, d, up_port, cert, key):
        self.port = bench.free_port()
        self.d = d
        if system == "deskgate":
            cfg = bench.deskgate_config(d, self.port, up_port, cert, key, threads=1)
            self.cmd = [str(binary), "-c", str(cfg)]
        else:
            self.cmd = nginx_conf(d, self.port, up_port, cert, key)
        self.addr = f"127.0.0.1:{self.port}"

    def run(self, out_file, drive):
        """Starts the proxy under callgrind, calls drive(addr) -> units, stops it with SIGINT
        (an immediate exit for both), returns (units, total Ir, self costs)."""
        p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", "--dump-instr=no",
                              "--separate-threads=no", *self.cmd],
                             stdout=open(self.d / "valgrind.log", "a"), stderr=subprocess.STDOUT, preexec_fn=bench.raise_nofile)
        try:
            bench.wait_port(self.port, p, limit=120)
            # An open port is not yet a proxy (under valgrind start-up is slow, and another
            # process may hold the port for a moment): one WSS connection through it first,
            # in both runs alike.
            end = time.time() + 120
            while wsload(self.addr, ["handshake", "--concurrency", "1", "--count", "1", "--seconds", "30"])["failed"]:
                if time.time() > end or p.poll() is not None:
                    raise RuntimeError(f"no WSS connection through {self.addr}")
                time.sleep(1)
            units = drive(self.addr)
        finally:
            p.send_signal(2)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill(); p.wait()
        return units, total_ir(out_file), self_costs(out_file)


def wsload(addr, args, timeout=900):
    out = subprocess.run([str(bench.WSLOAD), "--addr", addr, *args], capture_output=True, text=True, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def driver(work, n, mode):
    """drive(addr) -> units done, for `n` units of `work`."""
    if work == "handshake":
        flag = [] if bench.HANDSHAKE_MODES[mode][0] else ["--no-resume"]
        def drive(addr):
            # 16 first so a resuming client holds tickets; counted in both runs alike.
            wsload(addr, ["handshake", "--concurrency", "1", "--count", "16", "--seconds", "300"])
            r = wsload(addr, [*flag, "handshake", "--concurrency", "1", "--count", str(n), "--seconds", "600"])
            if r["failed"]:
                raise RuntimeError(f"{r['failed']} handshakes failed")
            return r["handshakes"]
    elif work == "request":
        def drive(addr):
            # One kept-alive connection at a fixed low rate: n requests, one at a time.
            rate = 200
            r = wsload(addr, ["paced", "--rate", str(rate), "--connections", "1", "--seconds", str(n / rate)])
            return r["requests"]
    elif work == "message":
        def drive(addr):
            r = wsload(addr, ["rtt", "--sockets", "1", "--in-flight", "1", "--seconds", str(n / 500)])
            return r["messages"]
    elif work == "mb":
        def drive(addr):
            r = wsload(addr, ["stream", "--seconds", str(n)])
            return r["bytes"] / 1e6
    return drive


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", choices=["handshake", "request", "message", "mb"], default="handshake")
    ap.add_argument("--mode", choices=list(bench.HANDSHAKE_MODES), default="both", help="handshake mode (browser leg / upstream leg resumed)")
    ap.add_argument("--cert", choices=["rsa", "ecdsa"], default="rsa")
    ap.add_argument("--system", choices=["deskgate", "nginx"], default="deskgate")
    ap.add_argument("--binary", default=str(bench.DESKGATE))
    ap.add_argument("--n", default=None, help="N1,N2 units (defaults per work)")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    n1, n2 = map(float, (a.n or {"handshake": "20,120", "request": "200,1200", "message": "200,1200", "mb": "1,4"}[a.work]).split(","))
    bench.raise_nofile()
    work = bench.ROOT / "target/callgrind"  # bench/run clears bench/results/tmp
    work.mkdir(parents=True, exist_ok=True)
    cert, key, _ = bench.make_cert(work, a.cert)
    # The desktop: refuses resumption unless the mode resumes the upstream leg.
    refuse = a.work == "handshake" and not bench.HANDSHAKE_MODES[a.mode][1]
    # Requests and streams need desktop-sim (/whoami, `stream COUNT SIZE`); handshakes and
    # echoes go to `wsload serve`, which counts resumed handshakes.
    sim_work = a.work in ("request", "mb")
    up = bench.ServeUpstream(work, cert, key, refuse) if not sim_work else None
    up_port = up.port if up else bench.free_port()
    sim = None
    if sim_work:
        sim = subprocess.Popen([str(bench.DESKGATE), "desktop-sim", "--listen", f"127.0.0.1:{up_port}", "--name", "up", "--cert", str(cert), "--key", str(key)],
                               stdout=subprocess.DEVNULL)
        bench.wait_port(up_port, sim)
    name = f"{a.system}{a.label}-{a.work}" + (f"-{a.mode}-{a.cert}" if a.work == "handshake" else "")
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    try:
        proxy = Proxy(a.system, a.binary, d, up_port, cert, key)
        u1, t1, c1 = proxy.run(d / "callgrind.n1", driver(a.work, int(n1) if a.work != "mb" else n1, a.mode))
        c_up = up.counts() if up else None
        u2, t2, c2 = proxy.run(d / "callgrind.n2", driver(a.work, int(n2) if a.work != "mb" else n2, a.mode))
    finally:
        if up:
            up.stop()
        if sim:
            sim.kill()
    units = u2 - u1
    per = (t2 - t1) / units
    groups = {}
    for f in set(c1) | set(c2):
        g = classify(f)
        groups[g] = groups.get(g, 0) + (c2.get(f, 0) - c1.get(f, 0)) / units
    p1, p2 = inclusive_phases(d / "callgrind.n1"), inclusive_phases(d / "callgrind.n2")
    phases = {ph: (p2.get(ph, 0) - p1.get(ph, 0)) / units for ph, _ in PHASES if ph in p2}
    top = sorted(((c2.get(f, 0) - c1.get(f, 0)) / units, f) for f in set(c1) | set(c2))[::-1][:40]
    res = {"system": a.system, "binary": a.binary, "work": a.work, "mode": a.mode if a.work == "handshake" else None, "cert": a.cert,
           "units": [u1, u2], "ir_per_unit": per, "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])), "phases_inclusive": phases,
           "top_functions": [[round(v), f] for v, f in top], "upstream_counts_after_n1_run": c_up}
    (d / "result.json").write_text(json.dumps(res, indent=1))
    print(f"{name}: {per:,.0f} instructions per {a.work} ({u1} and {u2} units)")
    for g, v in res["groups"].items():
        print(f"  {v:>12,.0f}  {100 * v / per:5.1f} %  {g}")
    print("  phases (inclusive):")
    for ph, v in phases.items():
        print(f"  {v:>12,.0f}  {100 * v / per:5.1f} %  {ph}")
    print("  top functions:")
    for v, f in res["top_functions"][:25]:
        print(f"  {v:>12,}  {f}")


if __name__ == "__main__":
    main()

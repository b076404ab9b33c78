#!/usr/bin/env python3
"""deskgate at the size of a district: bench/scale (see that script). Loopback only, bounded.

Two edges (release binary) share runtime routes through one redis-server; two
`deskgate desktop-sim` processes are the desktops. Phases:
1. routes: N runtime routes added one by one through edge A's admin API (kept-alive HTTP);
   time and CPU (edge A, edge B applying the events, Redis) per add in windows at 1, 1,000
   and N routes; Redis commands per add. At 10, 1,000 and N routes: a fixed-rate HTTPS load
   on one runtime route through edge A (edge CPU per request: the lookup is part of it) and
   propagation A -> B (add through A, poll B's API until it has it).
2. hold: S WebSockets on each edge (wsload hold, one 64-byte message per socket every 5 s) for
   HOLD seconds: KiB per WebSocket (RSS), edge CPU per message, drops. Then edge B is killed
   and started again under that load: its WebSockets drop (as they must), A's do not; the
   new B is timed to in-sync with N routes and every route is requested through it.
CPU figures are per unit of work from /proc (utime+stime), because this 2-core machine is
shared with other builds (wall-clock rates would measure them too).
"""
import argparse, http.client, json, os, resource, signal, socket, ssl, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

from bench import cpu_seconds, free_port, rss_kib, wait_port  # bench/bench.py, next to this file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("DESKGATE_BIN", ROOT / "target/release/deskgate"))
WSLOAD = Path(os.environ.get("WSLOAD_BIN", ROOT / "target/release/wsload"))
TOKEN = "scale-admin-token"
PERIOD = 5  # seconds between one socket's messages during the hold


def cpu_ns_seconds(pid):
    """CPU time of a process's live threads in seconds, from the scheduler's nanosecond run
    times (/proc/PID/task/*/schedstat), where /proc/PID/stat counts 10 ms ticks; falls back to
    the ticks when schedstat is absent."""
    total, seen = 0, False
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return cpu_seconds(pid)
    for t in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
            seen = True
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9 if seen else cpu_seconds(pid)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


class Admin:
    """One kept-alive connection to an edge's admin API."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method, path, body=None):
        headers = {"Authorization": f"token {TOKEN}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def metric(self, name):
        _, body = self.call("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


class Scale:
    def __init__(self, a, work):
        self.a, self.work = a, work
        self.redis_port = free_port()
        self.desktops = [free_port(), free_port()]
        self.edges = {name: {"tls": free_port(), "admin": free_port()} for name in "AB"}
        self.procs = {}
        self.results = {"machine": machine(), "args": vars(a)}

    # ---- processes
    def spawn(self, name, cmd, env=None):
        log = open(self.work / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        return self.procs[name]

    def start(self):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=hub.test", "-addext", "subjectAltName=DNS:hub.test,IP:127.0.0.1",
                        "-keyout", str(self.work / "edge.key"), "-out", str(self.work / "edge.pem")],
                       check=True, capture_output=True)
        # As a route store runs in production: appended to disk every second.
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.work)])
        wait_port(self.redis_port)
        for i, port in enumerate(self.desktops):
            self.spawn(f"desktop{i}", [str(BIN), "desktop-sim", "--listen", f"127.0.0.1:{port}", "--name", f"d{i}"])
            wait_port(port)
        for name in "AB":
            self.start_edge(name)
        self.admin = {name: Admin(e["admin"]) for name, e in self.edges.items()}
        for name in "AB":
            self.wait_in_sync(name, 0)

    def start_edge(self, name):
        e = self.edges[name]
        conf = self.work / f"edge{name}.yaml"
        conf.write_text(f"""listeners:
  - addr: "127.0.0.1:{e['tls']}"
    tls: {{ certs: [{{ cert: "{self.work}/edge.pem", key: "{self.work}/edge.key" }}] }}
admin: {{ addr: "127.0.0.1:{e['admin']}", token_env: CONFIGPROXY_AUTH_TOKEN }}
route_store: {{ redis: "redis://127.0.0.1:{self.redis_port}/0", key_prefix: "scale:" }}
dynamic: {{ tls: {{ verify: false }}, strip_prefix: true }}
timeouts: {{ upgraded_idle: 1h }}
log: {{ level: warn }}
""")
        p = self.spawn(f"edge{name}", [str(BIN), "-c", str(conf)], env=dict(os.environ, CONFIGPROXY_AUTH_TOKEN=TOKEN))
        wait_port(e["tls"])
        wait_port(e["admin"])
        e["pid"] = p.pid

    def wait_in_sync(self, name, routes, limit=120):
        end = time.time() + limit
        while time.time() < end:
            try:
                adm = self.admin[name]
                if adm.metric("deskgate_route_store_up") == 1 and adm.metric("deskgate_runtime_routes") >= routes:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise SystemExit(f"edge {name} not in sync with {routes} routes after {limit}s")

    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], capture_output=True, text=True, check=True)
        return out.stdout

    def redis_stats(self, field="calls"):
        """Per command: its calls (or, with field="usec", the microseconds Redis spent in it)."""
        stats = {}
        for line in self.redis("INFO", "all").splitlines():
            if line.startswith("cmdstat_"):
                cmd, rest = line[len("cmdstat_"):].split(":", 1)
                stats[cmd] = int(dict(kv.split("=") for kv in rest.split(","))[field])
            elif line.startswith("total_commands_processed:"):
                stats["_total"] = int(line.split(":")[1])
        return stats

    def cpu(self):
        return {"A": cpu_ns_seconds(self.edges["A"]["pid"]), "B": cpu_ns_seconds(self.edges["B"]["pid"]),
                "redis": cpu_ns_seconds(self.procs["redis"].pid)}

    def target(self, i):
        return json.dumps({"target": f"https://127.0.0.1:{self.desktops[i % 2]}", "user": f"u{i}"})

    # ---- phase 1: routes
    def routes(self):
        n = self.a.routes
        checkpoints = [c for c in (10, 1000, n) if c <= n]
        # Windows of `--window` adds that no checkpoint's measurements fall into (CPU from the
        # scheduler's nanosecond run time of every thread, not /proc's 10 ms ticks).
        w = self.a.window
        windows = {f"10-{10 + w:,}": (10, 10 + w), f"1,000-{1000 + w:,}": (1000, 1000 + w), f"{n - w:,}-{n:,}": (n - w, n)}
        marks = {i for w in windows.values() for i in w}
        latency, cpu_at, redis_at, time_at, by_size = [], {}, {}, {}, {}
        redis_start = self.redis_stats()
        adm = self.admin["A"]
        started = time.time()
        for i in range(n):
            if i in marks:
                cpu_at[i], redis_at[i], time_at[i] = self.cpu(), self.redis_stats()["_total"], time.perf_counter()
            t0 = time.perf_counter()
            status, _ = adm.call("POST", f"/api/routes/desktop/u{i}", self.target(i))
            latency.append(time.perf_counter() - t0)
            if status != 201:
                raise SystemExit(f"route {i}: {status}")
            if i + 1 in checkpoints:
                if i + 1 in marks:
                    cpu_at[i + 1], redis_at[i + 1], time_at[i + 1] = self.cpu(), self.redis_stats()["_total"], time.perf_counter()
                self.wait_in_sync("B", i + 1)
                by_size[i + 1] = {"requests": self.requests(i), "propagation": self.propagation(i + 1)}
                print(f"  {i + 1} routes: {by_size[i + 1]}", flush=True)
        redis_end = self.redis_stats()
        deletes = self.deletes(n, w)
        idle = self.idle()
        busy = self.busy_sync(n)
        adds = {}
        for label, (lo, hi) in windows.items():
            count = hi - lo
            lat = latency[lo:hi]
            adds[label] = {
                "p50_ms": statistics.median(lat) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                "edge_a_cpu_us": (cpu_at[hi]["A"] - cpu_at[lo]["A"]) / count * 1e6,
                "edge_b_cpu_us": (cpu_at[hi]["B"] - cpu_at[lo]["B"]) / count * 1e6,
                "redis_cpu_us": (cpu_at[hi]["redis"] - cpu_at[lo]["redis"]) / count * 1e6,
                "redis_commands": (redis_at[hi] - redis_at[lo]) / count,
                "seconds": time_at[hi] - time_at[lo],
            }
            # What the window costs beyond the steady activity sync (idle CPU rate x its time).
            for edge in "AB":
                spent = cpu_at[hi][edge] - cpu_at[lo][edge] - idle[edge] / 1e3 * adds[label]["seconds"]
                adds[label][f"edge_{edge.lower()}_cpu_us_less_sync"] = spent / count * 1e6
        self.results["routes"] = {
            "count": n, "seconds": time.time() - started, "adds": adds, "deletes": deletes, "idle": idle, "busy_sync": busy,
            "by_table_size": by_size,
            "redis_commands_by_name": {k: redis_end.get(k, 0) - redis_start.get(k, 0)
                                       for k in redis_end if k != "_total" and redis_end.get(k, 0) != redis_start.get(k, 0)},
            "latency_ms_every_100": [statistics.median(latency[j:j + 100]) * 1e3 for j in range(0, n, 100)],
        }

    def deletes(self, n, w):
        """The last `w` routes deleted through A (and applied by B), then added back: per delete."""
        adm = self.admin["A"]
        latency = []
        c0, r0 = self.cpu(), self.redis_stats()["_total"]
        for i in range(n - 1, n - 1 - w, -1):
            t0 = time.perf_counter()
            status, _ = adm.call("DELETE", f"/api/routes/desktop/u{i}")
            latency.append(time.perf_counter() - t0)
            if status != 204:
                raise SystemExit(f"delete route {i}: {status}")
        c1, r1 = self.cpu(), self.redis_stats()["_total"]
        for i in range(n - w, n):
            assert adm.call("POST", f"/api/routes/desktop/u{i}", self.target(i))[0] == 201
        self.wait_in_sync("B", n)
        return {"table": f"{n:,}-{n - w:,}", "p50_ms": statistics.median(latency) * 1e3, "p99_ms": pct(latency, 99) * 1e3,
                "edge_a_cpu_us": (c1["A"] - c0["A"]) / w * 1e6, "edge_b_cpu_us": (c1["B"] - c0["B"]) / w * 1e6,
                "redis_cpu_us": (c1["redis"] - c0["redis"]) / w * 1e6, "redis_commands": (r1 - r0) / w}

    def idle(self, seconds=10):
        """CPU per second with the full table and no changes: the steady cost of syncing activity."""
        c0 = self.cpu()
        time.sleep(seconds)
        c1 = self.cpu()
        return {k: (c1[k] - c0[k]) / seconds * 1e3 for k in ("A", "B", "redis")}

    def busy_sync(self, n, seconds=10):
        """CPU per second when every route's activity moves every second: a third writer moves all
        `n` routes' times in Redis each second as an edge's merge script does, and both edges
        read them. The edges' steady cost per moved route (their own pushes are planned alike)."""
        touch_all = ("for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do "
                     "redis.call('ZADD', KEYS[1], ARGV[1], p) end return 1")
        c0, started = self.cpu(), time.time()
        calls0, usec0 = self.redis_stats(), self.redis_stats("usec")
        for round_ in range(seconds):
            self.redis("EVAL", touch_all, "1", "scale:activity_by_time", str(int(time.time() * 1e3)))
            time.sleep(max(0.0, started + round_ + 1 - time.time()))
        c1 = self.cpu()
        spent = time.time() - started
        calls1, usec1 = self.redis_stats(), self.redis_stats("usec")
        out = {k: (c1[k] - c0[k]) / spent * 1e3 for k in ("A", "B", "redis")}
        out["routes_moved_per_s"] = n
        # Redis's own account, per route: the writer's moves (EVAL, as an edge's merge script),
        # and the edges' reads (ZRANGEBYSCORE, each returning every moved route).
        reads = calls1.get("zrangebyscore", 0) - calls0.get("zrangebyscore", 0)
        out["redis_write_us_per_route"] = (usec1.get("eval", 0) - usec0.get("eval", 0)) / (seconds * n)
        out["redis_read_us_per_route"] = (usec1.get("zrangebyscore", 0) - usec0.get("zrangebyscore", 0)) / max(1, reads * n)
        return out

    def requests(self, i):
        """A fixed rate of small HTTPS requests on route u<i> through edge A: CPU per request."""
        edge = self.edges["A"]
        c0 = cpu_seconds(edge["pid"])
        out = subprocess.run([str(WSLOAD), "--addr", f"127.0.0.1:{edge['tls']}", "--host", "hub.test", "paced",
                              "--rate", str(self.a.rate), "--connections", "20", "--seconds", str(self.a.request_seconds),
                              "--request-path", f"/desktop/u{i}/whoami"],
                             capture_output=True, text=True, timeout=self.a.request_seconds + 60)
        c1 = cpu_seconds(edge["pid"])
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["edge_cpu_us_per_request"] = (c1 - c0) / max(1, r["requests"]) * 1e6
        return {"requests": r["requests"], "achieved_per_s": r["achieved_per_s"], "errors": r["errors"],
                "p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
                "edge_cpu_us_per_request": r["edge_cpu_us_per_request"]}

    def propagation(self, size, samples=50):
        """Add through A, poll B until it has the route (ms); the probes are deleted again."""
        a, b = self.admin["A"], self.admin["B"]
        times = []
        for j in range(samples):
            path = f"/api/routes/probe/{size}-{j}"
            t0 = time.perf_counter()
            assert a.call("POST", path, self.target(j))[0] == 201
            end = time.time() + 10
            while b.call("GET", path)[0] != 200:
                if time.time() > end:
                    raise SystemExit(f"{path} never reached edge B")
            times.append((time.perf_counter() - t0) * 1e3)
        for j in range(samples):
            a.call("DELETE", f"/api/routes/probe/{size}-{j}")
        return {"p50_ms": statistics.median(times), "p99_ms": pct(times, 99), "max_ms": max(times)}

    # ---- phase 2: hold, then restart B
    def hold(self):
        s, hold_s, after = self.a.sockets_per_edge, self.a.hold_seconds, self.a.after_restart_seconds
        rss0 = {n: rss_kib(self.edges[n]["pid"]) for n in "AB"}
        loads = {}
        for n, route in (("A", 0), ("B", 1)):
            ready, go = self.work / f"ready{n}", self.work / f"go{n}"
            log = open(self.work / f"wsload{n}.log", "w")
            loads[n] = subprocess.Popen(
                [str(WSLOAD), "--addr", f"127.0.0.1:{self.edges[n]['tls']}", "--host", "hub.test",
                 "--path", f"/desktop/u{route}/websockify", "hold", "--sockets", str(s),
                 "--seconds", str(hold_s + after), "--period", str(PERIOD),
                 "--ready-file", str(ready), "--go-file", str(go)], stdout=subprocess.PIPE, stderr=log, text=True)
        end = time.time() + 600
        while not all((self.work / f"ready{n}").exists() for n in "AB"):
            if time.time() > end:
                raise SystemExit("the WebSockets did not open within 600 s")
            time.sleep(0.2)
        time.sleep(1)  # RSS settles after the last handshake's buffers are freed
        opened = {n: int((self.work / f"ready{n}").read_text()) for n in "AB"}
        rss1 = {n: rss_kib(self.edges[n]["pid"]) for n in "AB"}
        open_metric = {n: self.admin[n].metric("deskgate_websockets_open") for n in "AB"}
        cpu0 = {n: cpu_seconds(self.edges[n]["pid"]) for n in "AB"}
        redis0 = cpu_seconds(self.procs["redis"].pid)
        for n in "AB":
            (self.work / f"go{n}").touch()
        went = time.time()
        samples = []
        while time.time() < went + hold_s:
            time.sleep(5)
            samples.append((time.time() - went, {n: self.admin[n].metric("deskgate_websockets_open") for n in "AB"},
                            {n: rss_kib(self.edges[n]["pid"]) / 1024 for n in "AB"}))
        held = {n: self.admin[n].metric("deskgate_websockets_open") for n in "AB"}
        # Redis's steady cost with N routes and two edges: each edge's activity sync a second.
        redis_ms_per_s = (cpu_seconds(self.procs["redis"].pid) - redis0) / (time.time() - went) * 1e3
        cpu_b_hold = cpu_seconds(self.edges["B"]["pid"]) - cpu0["B"]
        # Edge B dies (SIGKILL, as a crash) and is started again while A carries on.
        killed = time.time()
        self.procs["edgeB"].send_signal(signal.SIGKILL)
        self.procs["edgeB"].wait()
        self.start_edge("B")
        listening = time.time() - killed
        self.admin["B"] = Admin(self.edges["B"]["admin"])
        self.wait_in_sync("B", self.a.routes)
        in_sync = time.time() - killed
        served, serve_s = self.serve_all("B")
        while time.time() < went + hold_s + after:
            time.sleep(5)
            samples.append((time.time() - went, {n: self.admin[n].metric("deskgate_websockets_open") for n in "AB"},
                            {n: rss_kib(self.edges[n]["pid"]) / 1024 for n in "AB"}))
        out = {n: json.loads(loads[n].communicate(timeout=hold_s + after + 300)[0].strip().splitlines()[-1]) for n in "AB"}
        cpu_a = cpu_seconds(self.edges["A"]["pid"]) - cpu0["A"]
        self.results["hold"] = {
            "sockets_per_edge": s, "opened": opened, "redis_cpu_ms_per_s": redis_ms_per_s, "open_metric_after_opening": open_metric,
            "open_metric_after_hold": held, "hold_seconds": hold_s,
            "kib_per_websocket": {n: (rss1[n] - rss0[n]) / max(1, opened[n]) for n in "AB"},
            "edge_a_cpu_us_per_message": cpu_a / max(1, out["A"]["echoed"]) * 1e6,
            "edge_b_cpu_us_per_message_before_restart": cpu_b_hold / max(1, opened["B"] * hold_s / PERIOD) * 1e6,
            "wsload": out,
            "restart_b": {"listening_s": listening, "in_sync_s": in_sync, "routes_served": served,
                          "serve_all_s": serve_s},
            "samples": samples,
        }

    def serve_all(self, name):
        """Every runtime route through edge `name` (kept-alive HTTPS): how many answered 200."""
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        port = self.edges[name]["tls"]
        conn, ok, t0 = None, 0, time.time()
        for i in range(self.a.routes):
            for attempt in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
                    conn.request("GET", f"/desktop/u{i}/whoami", headers={"Host": "hub.test"})
                    r = conn.getresponse()
                    body = r.read()
                    ok += r.status == 200 and body.strip() == f"d{i % 2}".encode()
                    break
                except (http.client.HTTPException, OSError):
                    conn = None
        return ok, time.time() - t0

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def machine():
    load = os.getloadavg()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"cores": os.cpu_count(), "loadavg_at_start": load, "nofile_soft": soft, "nofile_hard": hard,
            "ip_local_port_range": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split(),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()}


# ---- report
def svg_lines(title, xlabel, ylabel, series, path, log_x=False):
    """series = [(label, [(x, y), ...])]."""
    import math
    w, h, pad = 640, 260, 52
    fx = (lambda x: math.log10(max(x, 1))) if log_x else (lambda x: x)
    pts = [p for _, s in series for p in s]
    x0, x1 = min(fx(x) for x, _ in pts), max(fx(x) for x, _ in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    ymax = max(y for _, y in pts) * 1.15 or 1
    sx = lambda x: pad + (w - 20 - pad) * (fx(x) - x0) / (x1 - x0)
    sy = lambda y: h - pad - (h - pad - 28) * y / ymax
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>', f'<text x="{pad}" y="16" font-size="13">{title}</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - 20}" y2="{h - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="28" x2="{pad}" y2="{h - pad}" stroke="#444"/>']
    for i in range(5):
        y = ymax * i / 4
        out.append(f'<text x="4" y="{sy(y) + 4:.0f}">{y:.3g}</text><line x1="{pad}" y1="{sy(y):.0f}" x2="{w - 20}" y2="{sy(y):.0f}" stroke="#eee"/>')
    ticks = sorted({x for x, _ in pts})
    for x in (ticks if len(ticks) <= 8 else ticks[:: max(1, len(ticks) // 6)] + [ticks[-1]]):
        out.append(f'<text x="{sx(x) - 12:.0f}" y="{h - pad + 14}">{x:,.0f}</text>')
    out.append(f'<text x="{w / 2 - 40:.0f}" y="{h - 12}">{xlabel}</text>')
    out.append(f'<text x="4" y="{h / 2:.0f}" transform="rotate(-90 10 {h / 2:.0f})">{ylabel}</text>')
    for i, (label, s) in enumerate(series):
        c = colors[i % len(colors)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)}"/>')
        out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{c}"/>' for x, y in s] if len(s) < 20 else []
        out.append(f'<text x="{w - 230}" y="{40 + 14 * i}" fill="{c}">{label}</text>')
    out.append("</svg>")
    Path(path).write_text("\n".join(out) + "\n")


def report(res, date):
    results = ROOT / "bench/results"
    base = f"scale-{date}"
    (results / f"{base}.json").write_text(json.dumps(res, indent=1) + "\n")
    r, m = res["routes"], res["machine"]
    lines = [f"# bench/scale, {date}", "",
             f"Commit `{m['commit']}`, release build, loopback. {m['cores']} cores **shared with other helpers' builds** "
             f"(load average {m['loadavg_at_start'][0]:.1f} at start): wall-clock figures include their load, so the "
             "per-unit CPU times (utime+stime from /proc) are the ones to plan with. Descriptors: soft limit raised to the "
             f"hard limit by bench/scale ({m['nofile_soft']:,}; the hard limit cannot be raised here), which caps one edge "
             "at just under 10,000 proxied WebSockets (two descriptors each).", "",
             f"## {r['count']:,} runtime routes through the admin API", "",
             f"Added one by one through edge A's API on one kept-alive connection in {r['seconds']:.0f} s; "
             f"edge B applies each from Redis's event. Per add, in windows of {res['args'].get('window', 100)} adds:", "",
             "| table size | p50 ms | p99 ms | edge A CPU us | edge B CPU us | Redis CPU us | Redis commands |", "|---|---|---|---|---|---|---|"]
    for label, w in r["adds"].items():
        lines.append(f"| {label} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | {w['edge_a_cpu_us']:.0f} | {w['edge_b_cpu_us']:.0f} | {w['redis_cpu_us']:.0f} | {w['redis_commands']:.1f} |")
    if r.get("deletes"):
        d = r["deletes"]
        lines.append(f"| deletes, {d['table']} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {d['edge_a_cpu_us']:.0f} | {d['edge_b_cpu_us']:.0f} | {d['redis_cpu_us']:.0f} | {d['redis_commands']:.1f} |")
    if r.get("idle"):
        i = r["idle"]
        lines += ["", f"With all {r['count']:,} routes and no changes (10 s): edge A {i['A']:.1f}, edge B {i['B']:.1f}, Redis {i['redis']:.1f} ms CPU "
                  "per second (each edge pushes and pulls activity every second); included in the windows above."]
        net = [(label, w) for label, w in r["adds"].items() if "edge_a_cpu_us_less_sync" in w]
        if net:
            lines += ["", "Per add less that steady cost (the idle rate times each window's time, an upper bound: the "
                      "sync is cheaper with fewer routes): " + "; ".join(
                          f"{label}: edge A {w['edge_a_cpu_us_less_sync']:.0f}, B {w['edge_b_cpu_us_less_sync']:.0f} us" for label, w in net) + "."]
    if r.get("busy_sync"):
        b, i = r["busy_sync"], r["idle"]
        lines += ["", f"With every one of the {b['routes_moved_per_s']:,} routes' activity moving every second (written into "
                  "Redis by a third writer, 10 s): edge A {:.1f}, edge B {:.1f}, Redis {:.1f} ms CPU per second; "
                  "per moved route and edge {:.2f} us. In Redis's own account (INFO commandstats): {:.2f} us per route "
                  "moved (the writer's script) and {:.2f} us per route read by an edge.".format(
                      b["A"], b["B"], b["redis"], max(b["A"] - i["A"], b["B"] - i["B"]) / b["routes_moved_per_s"] * 1e3,
                      b.get("redis_write_us_per_route", float("nan")), b.get("redis_read_us_per_route", float("nan")))]
    lines += ["", "Redis commands over the whole add phase: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(r["redis_commands_by_name"].items())), "",
              "At each table size: small HTTPS requests on one runtime route through edge A at a fixed rate "
              "(the route lookup is part of each request's cost), and propagation A -> B (add through A, poll B's API; 50 probes):", "",
              "| routes | requests | edge CPU us/request | p50 ms | p99 ms | propagation p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for size, v in r["by_table_size"].items():
        q, p = v["requests"], v["propagation"]
        lines.append(f"| {int(size):,} | {q['requests']:,} | {q['edge_cpu_us_per_request']:.1f} | {q.get('p50_ms', float('nan')):.2f} | {q.get('p99_ms', float('nan')):.2f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} |")
    h = res.get("hold")
    if h:
        wa, wb, rb = h["wsload"]["A"], h["wsload"]["B"], h["restart_b"]
        lines += ["", f"## {sum(h['opened'].values()):,} WebSockets across two edges", "",
                  f"{h['sockets_per_edge']:,} per edge (the descriptor limit), one 64-byte message per socket every {PERIOD} s, "
                  f"held {h['hold_seconds']} s; then edge B killed (SIGKILL) and started again while A carried on.", "",
                  "| | edge A | edge B |", "|---|---|---|",
                  f"| opened | {h['opened']['A']:,} | {h['opened']['B']:,} |",
                  f"| open after the hold (metric) | {h['open_metric_after_hold']['A']:,.0f} | {h['open_metric_after_hold']['B']:,.0f} |",
                  f"| KiB per WebSocket (RSS) | {h['kib_per_websocket']['A']:.1f} | {h['kib_per_websocket']['B']:.1f} |",
                  f"| edge CPU us per message | {h['edge_a_cpu_us_per_message']:.1f} | {h['edge_b_cpu_us_per_message_before_restart']:.1f} (before the restart) |",
                  f"| messages sent / echoed / lost | {wa['sent']:,} / {wa['echoed']:,} / {wa['lost']:,} | {wb['sent']:,} / {wb['echoed']:,} / {wb['lost']:,} |",
                  f"| WebSockets dropped | {wa['dropped']:,} | {wb['dropped']:,} (the restart) |", "",
                  f"Redis during the hold ({r['count']:,} routes, two edges syncing activity every second): "
                  f"{h['redis_cpu_ms_per_s']:.1f} ms CPU per second.", "",
                  f"Restarted edge B: listening {rb['listening_s']:.2f} s after the kill, in sync with all {r['count']:,} routes "
                  f"from Redis after {rb['in_sync_s']:.2f} s; then every route requested through it: {rb['routes_served']:,} of "
                  f"{r['count']:,} answered by the right desktop ({rb['serve_all_s']:.0f} s, one kept-alive connection).", ""]
    lines += ["", "![time per route add vs. table size](" + base + "-adds.svg)", "", "![CPU per request and per add vs. table size](" + base + "-cost.svg)", ""]
    if h:
        lines += ["![open WebSockets per edge through the hold and B's restart](" + base + "-websockets.svg)", ""]
    (results / f"{base}.md").write_text("\n".join(lines) + "\n")
    svg_lines("Route add through the admin API (median of each 100 adds)", "routes in the table", "ms",
              [("add latency", [(j * 100 + 100, v) for j, v in enumerate(r["latency_ms_every_100"])])], results / f"{base}-adds.svg")
    sizes = sorted(int(s) for s in r["by_table_size"])
    svg_lines("CPU per unit vs. routes in the table", "routes (log scale)", "us",
              [("edge CPU per HTTPS request", [(s, r["by_table_size"][s]["requests"]["edge_cpu_us_per_request"]) for s in sizes]),
               ("propagation A->B p50, ms x 100", [(s, r["by_table_size"][s]["propagation"]["p50_ms"] * 100) for s in sizes])],
              results / f"{base}-cost.svg", log_x=True)
    if h:
        svg_lines("Open WebSockets per edge (hold, then edge B restarted)", "seconds", "open",
                  [(f"edge {n}", [(t, o[n]) for t, o, _ in h["samples"]]) for n in "AB"], results / f"{base}-websockets.svg")
    print((results / f"{base}.md").read_text())


# ---- capacity plan (docs/scaling.md): measured per-unit costs x a stated load model
MODEL = {
    "open_window_s": 60,          # at 8:00 every desktop of the size opens within the same minute
    "open_tls": 7,                # new TLS connections per desktop opened (6 for the page, 1 WebSocket)
    "open_requests": 60,          # HTTP requests per desktop opened (noVNC's page and modules)
    "in_use_share": 0.6,          # desktops in use at a given moment in school hours; the rest idle
    "in_use_msgs": 30,            # WebSocket messages/s of a desktop in use (framebuffer updates + input)
    "in_use_mb": 0.15,            # MB/s of a desktop in use
    "idle_msgs": 0.2,             # messages/s of an idle desktop (a clock, a cursor blink)
    "cpu_headroom": 0.5,          # plan edges at half their cores at the 8:00 peak
    "edges": {1000: (2, 2), 10000: (4, 8), 100000: (14, 16)},  # (edges incl. one spare, cores each)
}


def table_value(bench, scenario, metric_start):
    for row in bench["table"]:
        if row["scenario"] == scenario and row["metric"].startswith(metric_start):
            return row["values"]["deskgate"]
    raise KeyError((scenario, metric_start))


def plan(scale_json, bench_json, routes_json=None):
    """The capacity table of docs/scaling.md and its plots, from measured costs (the route
    phase from `routes_json` when given: a later run with --skip-hold)."""
    sc, bn = json.loads(Path(scale_json).read_text()), json.loads(Path(bench_json).read_text())
    if routes_json:
        sc["routes"] = json.loads(Path(routes_json).read_text())["routes"]
    m = MODEL
    cost = {  # CPU seconds per unit, one core
        "tls": table_value(bn, "handshake", "proxy CPU ms/connection") / 1e3,
        "request": table_value(bn, "https_small", "proxy CPU us/request") / 1e6,
        "message": table_value(bn, "ws_rtt", "proxy CPU us/message") / 1e6,
        "mb": table_value(bn, "ws_stream", "proxy CPU ms/MB") / 1e3,
        "idle_message": sc["hold"]["edge_a_cpu_us_per_message"] / 1e6,
        "kib_ws": max(sc["hold"]["kib_per_websocket"].values()),
    }
    windows = list(sc["routes"]["adds"].values())
    routes_measured = sc["routes"]["count"]
    idle = sc["routes"].get("idle")
    if idle and all("edge_b_cpu_us_less_sync" in w for w in windows):
        # A change costs O(log n) (the runtime tier): the dearest window of either edge (the
        # one taking the writes, A, is dearer than those applying the events), less the steady
        # activity sync, which is planned on its own below.
        flat = max(max(w["edge_a_cpu_us_less_sync"], w["edge_b_cpu_us_less_sync"]) for w in windows) / 1e6
        add_cpu = lambda n: flat
    else:
        # Runs before the runtime tier: every edge rebuilt its table per change (O(routes)),
        # a line through B at ~1,050 and ~N-50 routes, extended to the size.
        slope = max(0.0, (windows[-1]["edge_b_cpu_us"] - windows[1]["edge_b_cpu_us"]) / (routes_measured - 1100)) / 1e6
        base = windows[1]["edge_b_cpu_us"] / 1e6 - slope * 1050
        add_cpu = lambda n: max(base + slope * n, windows[0]["edge_b_cpu_us"] / 1e6)
    busy = sc["routes"].get("busy_sync")
    if idle and busy:
        # Each edge pushes the activity of the routes it carries that moved and pulls every
        # route that moved anywhere (the change log): the steady cost grows with the desktops
        # in use, not with the table. A pushed route is planned at a pulled route's cost.
        per_moved = max(busy["A"] - idle["A"], busy["B"] - idle["B"]) / 1e3 / busy["routes_moved_per_s"]
        sync_cores = lambda n: max(idle["A"], idle["B"]) / 1e3 + 2 * per_moved * n * m["in_use_share"]
    else:
        # Runs before the change log: each edge read the whole activity hash every second.
        sync_cores = lambda n: (max(idle["A"], idle["B"]) / 1e3 * n / routes_measured) if idle else 0.0
    if idle and busy:
        # Redis: each moved route is written once (an edge's merge script) and read by every
        # edge, at the costs Redis itself accounted in the measurement.
        if "redis_read_us_per_route" in busy:
            write, read = busy["redis_write_us_per_route"] / 1e6, busy["redis_read_us_per_route"] / 1e6
        else:
            # Its whole CPU, as if each of the two edges' reads carried half the write.
            write, read = 0.0, (busy["redis"] - idle["redis"]) / 1e3 / busy["routes_moved_per_s"] / 2
        redis_cores = lambda n, edges: idle["redis"] / 1e3 + n * m["in_use_share"] * (write + read * edges)
    else:
        # Before the sorted set by time: every edge read the whole activity hash every second
        # (measured during the hold, two edges).
        redis_per_route_edge = sc["hold"]["redis_cpu_ms_per_s"] / 1e3 / (routes_measured * 2)
        redis_cores = lambda n, edges: redis_per_route_edge * n * edges
    rows = []
    for n, (edges, cores) in m["edges"].items():
        steady = n * (m["in_use_share"] * (m["in_use_msgs"] * cost["message"] + m["in_use_mb"] * cost["mb"])
                      + (1 - m["in_use_share"]) * m["idle_msgs"] * cost["idle_message"])
        opening = n / m["open_window_s"] * (m["open_tls"] * cost["tls"] + m["open_requests"] * cost["request"])
        adds_per_s = n / m["open_window_s"]
        add_cpu_each_edge = adds_per_s * add_cpu(n) + sync_cores(n)
        active = edges - 1  # one edge may be down (a restart, a failure)
        peak_per_edge = (steady + opening) / active + add_cpu_each_edge
        rows.append({
            "desktops": n, "edges": edges, "cores_per_edge": cores,
            "add_cpu_ms_at_size": add_cpu(n) * 1e3, "activity_sync_cores_per_edge": sync_cores(n), "steady_cores": steady, "opening_cores": opening, "route_add_cores_per_edge": add_cpu_each_edge,
            "peak_cores_per_edge": peak_per_edge, "peak_share_of_edge": peak_per_edge / cores,
            "websockets_per_edge": n / active, "descriptors_per_edge": 2 * n / active + m["open_tls"] * n / m["open_window_s"] * 2,
            "memory_gib_per_edge": n / active * cost["kib_ws"] / 1024 / 1024,
            "handshakes_per_s": n / m["open_window_s"] * m["open_tls"],
            "redis_commands_per_s_at_8": adds_per_s * (5 + edges),
            "redis_cores_steady": redis_cores(n, edges),
        })
    return cost, rows


def plan_report(scale_json, bench_json, out_dir, routes_json=None):
    import math
    cost, rows = plan(scale_json, bench_json, routes_json)
    print(json.dumps({"cost": cost, "rows": rows}, indent=1))
    sizes = [r["desktops"] for r in rows]
    svg_lines("CPU cores needed at the 8:00 peak (all edges together)", "concurrent desktops (log scale)", "cores",
              [("WebSocket traffic (steady)", [(r["desktops"], r["steady_cores"]) for r in rows]),
               ("opening within 60 s (TLS, page)", [(r["desktops"], r["opening_cores"]) for r in rows]),
               ("route adds and activity sync, per edge", [(r["desktops"], r["route_add_cores_per_edge"]) for r in rows])],
              Path(out_dir) / "scaling-cores.svg", log_x=True)
    svg_lines("Per edge, share of its limit at the 8:00 peak (1 = the limit)", "concurrent desktops (log scale)", "share",
              [("CPU (at the planned cores)", [(r["desktops"], r["peak_share_of_edge"]) for r in rows]),
               ("descriptors (LimitNOFILE 1,048,576)", [(r["desktops"], r["descriptors_per_edge"] / 1048576) for r in rows]),
               ("memory (of 8 GiB)", [(r["desktops"], r["memory_gib_per_edge"] / 8) for r in rows]),
               ("Redis (one core)", [(r["desktops"], r["redis_cores_steady"]) for r in rows])],
              Path(out_dir) / "scaling-limits.svg", log_x=True)


def compare_adds(before_json, after_json, out):
    """CPU per route add vs. table size, two runs on one plot (before/after a change)."""
    def points(path, key):
        adds = json.loads(Path(path).read_text())["routes"]["adds"]
        return [(sum(int(x.replace(",", "")) for x in label.split("-")) / 2, w[key]) for label, w in adds.items()]
    name = lambda p: Path(p).stem
    svg_lines("CPU per route add vs. routes in the table (/proc)", "routes in the table (log scale)", "us per add",
              [(f"edge {e}, {name(p)}", points(p, f"edge_{e.lower()}_cpu_us")) for p in (before_json, after_json) for e in "AB"],
              Path(out), log_x=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--sockets-per-edge", type=int, default=9900)
    ap.add_argument("--hold-seconds", type=int, default=60)
    ap.add_argument("--after-restart-seconds", type=int, default=40)
    ap.add_argument("--rate", type=int, default=1000, help="HTTPS requests/s at each table size")
    ap.add_argument("--request-seconds", type=int, default=5)
    ap.add_argument("--skip-hold", action="store_true")
    ap.add_argument("--window", type=int, default=500, help="adds per measured window (CPU per add)")
    ap.add_argument("--date", default=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    ap.add_argument("--plan", nargs=2, metavar=("SCALE_JSON", "BENCH_JSON"),
                    help="only compute docs/scaling.md's table and plots from two results files")
    ap.add_argument("--routes-json", help="with --plan: the route phase from this run instead (a later --skip-hold run)")
    ap.add_argument("--compare-adds", nargs=3, metavar=("BEFORE_JSON", "AFTER_JSON", "OUT_SVG"),
                    help="only plot CPU per add of two runs")
    a = ap.parse_args()
    if a.compare_adds:
        compare_adds(*a.compare_adds)
        return
    if a.plan:
        plan_report(*a.plan, ROOT / "docs", a.routes_json)
        return
    assert a.routes <= 100000 and a.sockets_per_edge <= 20000 and a.hold_seconds <= 600, "bounded runs only"
    work = Path(tempfile.mkdtemp(prefix="deskgate-scale-"))
    s = Scale(a, work)
    try:
        s.start()
        print(f"bench/scale: {a.routes:,} routes ...", flush=True)
        s.routes()
        if not a.skip_hold:
            print(f"bench/scale: {a.sockets_per_edge:,} WebSockets per edge ...", flush=True)
            s.hold()
    finally:
        s.stop()
    report(s.results, a.date)
    print(f"work directory (logs): {work}")


if __name__ == "__main__":
    main()

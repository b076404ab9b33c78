"""deskgate under every fault at once, for a while: bench/soak [--minutes 10].

On loopback only, bounded in time and rate. Load: long-lived WebSockets echoing checked
payloads (to desktops that stay up, and to one that is killed and restarted every minute),
a bounded stream of small HTTPS requests, WebSocket clients arriving and leaving, runtime
routes added and deleted through the admin API (shared through Redis, which is restarted
once), and a reload every 30 s of which one in four is broken. Sampled every 5 s: RSS, open
descriptors, open WebSockets, requests/s, errors by kind. At the end the invariants are
checked and bench/results/soak-<date>.md is written with SVG plots next to it.
"""

import argparse
import asyncio
import datetime
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

from bench import free_port  # bench/bench.py, next to this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("DESKGATE_BIN", os.path.join(ROOT, "target", "release", "deskgate"))
TOKEN = "soak-admin-token"
STABLE = ["alice", "bob", "carol"]
VOLATILE = "dave"


def wait_port(port, limit=30):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {limit}s")


class Soak:
    def __init__(self, minutes, work):
        self.minutes = minutes
        self.work = work
        self.tls_port, self.admin_port, self.redis_port = free_port(), free_port(), free_port()
        self.desktop_ports = {n: free_port() for n in STABLE + [VOLATILE]}
        self.procs = {}
        self.counts = {
            "requests": 0, "request_errors": 0, "echoes": 0, "echo_bytes": 0, "echo_mismatch": 0,
            "stable_drops": 0, "volatile_drops": 0, "churn_ok": 0, "churn_errors": 0,
            "routes_added": 0, "route_errors": 0, "routes_refused_store_down": 0, "reloads_ok": 0, "reloads_broken": 0,
            "desktop_restarts": 0, "redis_restarts": 0,
        }
        self.samples = []
        self.stop = asyncio.Event()
        self.ssl = ssl.create_default_context()
        self.ssl.check_hostname = False
        self.ssl.verify_mode = ssl.CERT_NONE

    # ---- processes
    def start_desktop(self, name):
        log = open(os.path.join(self.work, f"desktop-{name}.log"), "a")
        self.procs[name] = subprocess.Popen(
            [BIN, "desktop-sim", "--listen", f"127.0.0.1:{self.desktop_ports[name]}", "--name", name],
            stdout=log, stderr=log)
        wait_port(self.desktop_ports[name])

    def start_redis(self):
        self.procs["redis"] = subprocess.Popen(
            # Persistent, as a shared route store runs in production: a restart keeps the routes.
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.work],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.redis_port)

    def config(self, generation, broken=False):
        upstreams = "".join(
            f"  desktop-{n}:\n    servers: [\"127.0.0.1:{p}\"]\n    tls: {{ verify: false, sni: kasm }}\n"
            for n, p in self.desktop_ports.items())
        text = f"""# soak generation {generation}
listeners:
  - addr: "127.0.0.1:{self.tls_port}"
    tls:
      certs: [{{ cert: "{self.work}/edge.pem", key: "{self.work}/edge.key" }}]
upstreams:
{upstreams}routes:
  - path: "/desktop/{{name}}/"
    upstream: "desktop-{{name}}"
    strip_prefix: true
  - path: "/generation-{generation}/"
    upstream: desktop-alice
    strip_prefix: true
admin:
  addr: "127.0.0.1:{self.admin_port}"
  token_env: CONFIGPROXY_AUTH_TOKEN
route_store: {{ redis: "redis://127.0.0.1:{self.redis_port}/0", key_prefix: "soak:" }}
dynamic: {{ tls: {{ verify: false }}, strip_prefix: true }}
timeouts: {{ upgraded_idle: 1h }}
log: {{ level: info }}
pid_file: "{self.work}/deskgate.pid"
"""
        if broken:
            text += "routes_typo: [\n"  # a YAML error: the old config must keep serving
        with open(os.path.join(self.work, "deskgate.yaml"), "w") as f:
            f.write(text)

    def start_deskgate(self):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=hub.test", "-addext", "subjectAltName=DNS:hub.test,IP:127.0.0.1",
                        "-keyout", f"{self.work}/edge.key", "-out", f"{self.work}/edge.pem"],
                       check=True, capture_output=True)
        self.config(0)
        self.log_path = os.path.join(self.work, "deskgate.log")
        log = open(self.log_path, "w")
        env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=TOKEN)
        self.procs["deskgate"] = subprocess.Popen(
            [BIN, "-c", os.path.join(self.work, "deskgate.yaml")], stdout=log, stderr=log, env=env)
        wait_port(self.tls_port)
        wait_port(self.admin_port)
        self.pid = self.procs["deskgate"].pid

    # ---- measurements
    def metric(self, name):
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}/metrics",
                                         headers={"Authorization": f"token {TOKEN}"})
            for line in urllib.request.urlopen(req, timeout=5).read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        except OSError:
            pass
        return None

    def process_sample(self):
        with open(f"/proc/{self.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{self.pid}/fd"))
        return rss, fds

    async def sampler(self):
        start = time.time()
        last_requests = 0
        while not self.stop.is_set():
            await asyncio.sleep(5)
            rss, fds = self.process_sample()
            req = self.counts["requests"]
            self.samples.append({
                "t": round(time.time() - start, 1), "rss_kib": rss, "fds": fds,
                "websockets": self.metric("deskgate_websockets_open") or 0,
                "requests_per_s": (req - last_requests) / 5,
                "errors": {k: self.counts[k] for k in ("request_errors", "echo_mismatch", "stable_drops",
                                                       "volatile_drops", "churn_errors", "route_errors")},
            })
            last_requests = req

    # ---- load
    async def pause(self, seconds):
        """Sleeps `seconds`, or less when the run ends; True when it has ended."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    def url(self, desktop, path):
        return f"wss://127.0.0.1:{self.tls_port}/desktop/{desktop}/{path}"

    async def echo_socket(self, desktop, stable, index):
        rng = random.Random(index)
        while not self.stop.is_set():
            try:
                async with websockets.connect(self.url(desktop, "websockify"), ssl=self.ssl,
                                              subprotocols=["binary"], max_size=None,
                                              origin="https://hub.test", ping_interval=None) as ws:
                    while not self.stop.is_set():
                        payload = bytes(rng.getrandbits(8) for _ in range(rng.choice([16, 300, 4000])))
                        await ws.send(payload)
                        back = await ws.recv()
                        if back != payload:
                            self.counts["echo_mismatch"] += 1
                        self.counts["echoes"] += 1
                        self.counts["echo_bytes"] += len(payload)
                        await self.pause(rng.uniform(0.2, 0.6))
                    await ws.close()
                    return
            except Exception as e:  # noqa: BLE001 - every way a socket can end counts
                if self.stop.is_set():
                    return
                self.counts["stable_drops" if stable else "volatile_drops"] += 1
                if stable:
                    print(f"soak: a socket to {desktop} dropped: {e!r}", file=sys.stderr)
                await asyncio.sleep(1)

    async def churn(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                async with websockets.connect(self.url(STABLE[i % 3], "websockify"), ssl=self.ssl,
                                              subprotocols=["binary"], origin="https://hub.test",
                                              ping_interval=None) as ws:
                    await ws.send(f"hello {i}")
                    if await ws.recv() == f"hello {i}":
                        self.counts["churn_ok"] += 1
            except Exception as e:  # noqa: BLE001
                self.counts["churn_errors"] += 1
                if self.counts["churn_errors"] <= 3:
                    print(f"soak: churn: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.2)

    def small_requests(self, rate):
        # A thread: keep-alive HTTPS requests, at most `rate` per second.
        import http.client
        conn = None
        while not self.stop.is_set():
            t0 = time.time()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, context=self.ssl, timeout=10)
                conn.request("GET", f"/desktop/{random.choice(STABLE)}/whoami", headers={"Host": "hub.test"})
                r = conn.getresponse()
                r.read()
                self.counts["requests" if r.status == 200 else "request_errors"] += 1
            except Exception:  # noqa: BLE001
                self.counts["request_errors"] += 1
                conn = None
            time.sleep(max(0.0, 1.0 / rate - (time.time() - t0)))

    def admin(self, method, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {TOKEN}"})
        return urllib.request.urlopen(req, timeout=10).status

    async def route_churn(self):
        i = 0
        added = []
        while not self.stop.is_set():
            i += 1
            try:
                target = f"https://127.0.0.1:{self.desktop_ports[STABLE[i % 3]]}"
                await asyncio.to_thread(self.admin, "POST", f"/api/routes/soak/{i}", {"target": target})
                added.append(i)
                self.counts["routes_added"] += 1
                if len(added) > 20:
                    await asyncio.to_thread(self.admin, "DELETE", f"/api/routes/soak/{added.pop(0)}")
            except Exception as e:  # noqa: BLE001
                body = e.read().decode(errors="replace") if hasattr(e, "read") else ""
                if "route store unavailable" in body:
                    # Refused while Redis restarts: the right answer, counted apart.
                    self.counts["routes_refused_store_down"] += 1
                    await asyncio.sleep(2)
                    continue
                self.counts["route_errors"] += 1
                if self.counts["route_errors"] <= 3:
                    print(f"soak: route: {e!r} {body}", file=sys.stderr)
            await asyncio.sleep(2)

    async def reloads(self):
        generation = 0
        while not await self.pause(30):
            generation += 1
            broken = generation % 4 == 0
            self.config(generation, broken)
            os.kill(self.pid, signal.SIGHUP)
            self.counts["reloads_broken" if broken else "reloads_ok"] += 1

    async def desktop_restarts(self):
        while not await self.pause(60):
            self.procs[VOLATILE].kill()
            self.procs[VOLATILE].wait()
            await asyncio.sleep(2)
            await asyncio.to_thread(self.start_desktop, VOLATILE)
            self.counts["desktop_restarts"] += 1

    async def redis_restart(self, at):
        if await self.pause(at):
            return
        self.procs["redis"].terminate()
        self.procs["redis"].wait()
        await asyncio.sleep(3)
        await asyncio.to_thread(self.start_redis)
        self.counts["redis_restarts"] += 1

    async def run(self):
        seconds = self.minutes * 60
        tasks = [asyncio.create_task(self.sampler())]
        sockets = [asyncio.create_task(self.echo_socket(STABLE[i % 3], True, i)) for i in range(30)]
        sockets += [asyncio.create_task(self.echo_socket(VOLATILE, False, 100 + i)) for i in range(5)]
        tasks += [asyncio.create_task(self.churn()), asyncio.create_task(self.route_churn()),
                  asyncio.create_task(self.reloads()), asyncio.create_task(self.desktop_restarts()),
                  asyncio.create_task(self.redis_restart(seconds / 2))]
        requests = asyncio.create_task(asyncio.to_thread(self.small_requests, 100))
        await asyncio.sleep(seconds)
        self.stop.set()
        await asyncio.gather(*sockets, *tasks, requests, return_exceptions=True)
        # Quiet: every client gone; what the process holds now is its idle level.
        deadline = time.time() + 30
        while time.time() < deadline and (self.metric("deskgate_websockets_open") or 0) > 0:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        rss, fds = self.process_sample()
        self.final = {"rss_kib": rss, "fds": fds, "websockets": self.metric("deskgate_websockets_open")}
        self.reload_failures = self.metric("deskgate_reload_failures_total")
        self.reloads_applied = self.metric("deskgate_reloads_total")

    def shutdown(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


# ---- report
def svg_plot(title, series, unit, path):
    """A line chart: series = [(label, [(t, y)...])]."""
    w, h, pad = 640, 240, 48
    points = [p for _, s in series for p in s]
    tmax = max(t for t, _ in points) or 1
    ymax = max(y for _, y in points) or 1
    ymax *= 1.1
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{pad}" y="16" font-size="13">{title}</text>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="24" x2="{pad}" y2="{h - pad}" stroke="#444"/>']
    for i in range(5):
        y = 24 + (h - pad - 24) * i / 4
        out.append(f'<text x="4" y="{y + 4:.0f}">{ymax * (1 - i / 4):.0f}</text>')
        out.append(f'<line x1="{pad}" y1="{y:.0f}" x2="{w - 10}" y2="{y:.0f}" stroke="#eee"/>')
    out.append(f'<text x="{pad}" y="{h - pad + 16}">0 s</text><text x="{w - 60}" y="{h - pad + 16}">{tmax:.0f} s</text>')
    out.append(f'<text x="{w / 2 - 20:.0f}" y="{h - 8}">{unit}</text>')
    for i, (label, s) in enumerate(series):
        c = colors[i % len(colors)]
        pts = " ".join(f"{pad + (w - 10 - pad) * t / tmax:.1f},{h - pad - (h - pad - 24) * y / ymax:.1f}" for t, y in s)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{w - 150}" y="{36 + 14 * i}" fill="{c}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def report(soak, date):
    results = os.path.join(ROOT, "bench", "results")
    os.makedirs(results, exist_ok=True)
    base = f"soak-{date}"
    s = soak.samples
    warm = next((x for x in s if x["t"] >= 60), s[0])
    plots = {
        "rss": ("RSS (KiB)", [("RSS", [(x["t"], x["rss_kib"]) for x in s])], "seconds"),
        "fds": ("Open descriptors", [("descriptors", [(x["t"], x["fds"]) for x in s])], "seconds"),
        "websockets": ("Open WebSockets", [("open", [(x["t"], x["websockets"]) for x in s])], "seconds"),
        "requests": ("Small requests per second", [("req/s", [(x["t"], x["requests_per_s"]) for x in s])], "seconds"),
        "errors": ("Errors by kind (cumulative)",
                   [(k, [(x["t"], x["errors"][k]) for x in s]) for k in s[0]["errors"]], "seconds"),
    }
    for name, (title, series, unit) in plots.items():
        svg_plot(title, series, unit, os.path.join(results, f"{base}-{name}.svg"))
    log = open(soak.log_path).read()
    panics = [l for l in log.splitlines() if "panicked" in l]
    # The desktop killed every minute: refused connections to it are real errors, expected here.
    expected = ("reload rejected", "route store", "redis", f"127.0.0.1:{soak.desktop_ports[VOLATILE]}")
    errors = [l for l in log.splitlines() if " ERROR " in l]
    unexpected = [l for l in errors if not any(e in l for e in expected)]
    c = soak.counts
    checks = [
        ("no WebSocket to a desktop that stayed up was dropped", c["stable_drops"] == 0, f"{c['stable_drops']} dropped"),
        ("every echoed byte came back intact", c["echo_mismatch"] == 0, f"{c['echoes']} echoes, {c['echo_bytes']} bytes, {c['echo_mismatch']} mismatched"),
        ("open descriptors back within 10 % of the warmed-up level",
         soak.final["fds"] <= warm["fds"] * 1.10, f"{warm['fds']} at 60 s -> {soak.final['fds']} at the end"),
        ("RSS back within 10 % of the warmed-up level",
         soak.final["rss_kib"] <= warm["rss_kib"] * 1.10, f"{warm['rss_kib']} KiB at 60 s -> {soak.final['rss_kib']} KiB at the end"),
        ("no WebSocket left open after the clients left", (soak.final["websockets"] or 0) == 0, f"{soak.final['websockets']}"),
        ("no panic", not panics, f"{len(panics)} panic lines"),
        ("no unexpected ERROR line", not unexpected, f"{len(errors)} ERROR lines, {len(unexpected)} unexpected"),
        ("broken reloads rejected, the others applied",
         soak.reload_failures == c["reloads_broken"] and soak.reloads_applied == c["reloads_ok"],
         f"{c['reloads_ok']} applied (metric {soak.reloads_applied:.0f}), {c['reloads_broken']} broken (metric {soak.reload_failures:.0f})"),
    ]
    lines = [f"# Soak run {date}", "",
             f"`bench/soak --minutes {soak.minutes}` on this machine (2 cores), release build, loopback only. "
             "30 WebSockets echoing to desktops that stay up, 5 to a desktop killed and restarted every minute, "
             "small HTTPS requests at up to 100/s, a WebSocket client arriving and leaving every 0.2 s, a runtime "
             "route added and one deleted every 2 s (shared through Redis, restarted once at half time), "
             "a reload every 30 s (every fourth one broken).", "",
             "| invariant | held | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {detail} |" for name, ok, detail in checks]
    lines += ["", "| counter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in c.items()]
    lines += ["", "Over time:", ""]
    lines += [f"![{plots[n][0]}]({base}-{n}.svg)" for n in plots]
    if unexpected:
        lines += ["", "Unexpected ERROR lines (first 20):", "", "```"] + unexpected[:20] + ["```"]
    with open(os.path.join(results, f"{base}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(results, f"{base}.json"), "w") as f:
        json.dump({"counts": c, "samples": s, "final": soak.final}, f, indent=1)
    print("\n".join(lines))
    return all(ok for _, ok, _ in checks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="deskgate-soak-")
    soak = Soak(args.minutes, work)
    try:
        soak.start_redis()
        for n in STABLE + [VOLATILE]:
            soak.start_desktop(n)
        soak.start_deskgate()
        asyncio.run(soak.run())
    finally:
        soak.shutdown()
    ok = report(soak, datetime.date.today().isoformat())
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

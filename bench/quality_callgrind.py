#!/usr/bin/env python3
"""Instructions per WebSocket message (callgrind), with and without the session quality
sampler (docs/operations.md, "Session quality"), on one binary: deskgate with one worker under
callgrind, TLS both legs, one WebSocket to `deskgate desktop-sim`, strict ping-pong of 64-byte
binary messages. The counters are zeroed after a warm-up and dumped after MESSAGES round trips,
so the figure is the tunnel's cost per message (both directions) plus whatever the sampler did
in that time (it reads both legs every 2 s, whatever the message rate).

usage: bench/quality_callgrind.py [--deskgate target/release/deskgate] [--messages 10000]
Needs valgrind (callgrind_control) and python3-websocket (websocket-client).
"""
import argparse
import glob
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import websocket  # websocket-client

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, limit=120):
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port} after {limit} s")


def totals(out_file):
    """Instructions in the newest dump of OUT_FILE (callgrind_control -d writes OUT_FILE.N)."""
    dumps = sorted(glob.glob(f"{out_file}.*"), key=os.path.getmtime)
    text = Path(dumps[-1]).read_text(errors="replace")
    m = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
    return int(m.group(1))


def run(deskgate, work, up_port, cert, key, sampler, messages):
    port = free_port()
    cfg = work / f"deskgate-{sampler}.yaml"
    cfg.write_text(f"""threads: 1
listeners:
  - addr: "127.0.0.1:{port}"
    tls: {{ certs: [ {{ cert: "{cert}", key: "{key}" }} ] }}
upstreams:
  up: {{ servers: ["127.0.0.1:{up_port}"], tls: {{ verify: false, sni: localhost }} }}
routes:
  - {{ path: "/", upstream: up }}
log: {{ level: warn }}
""")
    out_file = work / f"callgrind-{sampler}.out"
    env = dict(os.environ, DESKGATE_SESSION_QUALITY=sampler)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}", str(deskgate), "-c", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        ws = websocket.create_connection(f"wss://localhost:{port}/websockify", sslopt={"cert_reqs": ssl.CERT_NONE},
                                         subprotocols=["binary"], origin="https://localhost", timeout=60)
        payload = bytes(range(64))
        for _ in range(200):
            ws.send_binary(payload)
            ws.recv()
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        started = time.time()
        for _ in range(messages):
            ws.send_binary(payload)
            assert ws.recv() == payload
        seconds = time.time() - started
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        ws.close()
        return totals(out_file) / messages, seconds
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--deskgate", default=str(ROOT / "target/release/deskgate"))
    # 10,000 round trips take about 5 s under callgrind: the window spans two or three samples.
    ap.add_argument("--messages", type=int, default=10000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        cert, key = work / "cert.pem", work / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        up_port = free_port()
        upstream = subprocess.Popen([a.deskgate, "desktop-sim", "--listen", f"127.0.0.1:{up_port}", "--name", "up",
                                     "--cert", str(cert), "--key", str(key)], stdout=subprocess.DEVNULL)
        try:
            wait_port(up_port, upstream)
            for sampler in ("off", "on"):
                per_message, seconds = run(a.deskgate, work, up_port, cert, key, sampler, a.messages)
                print(f"sampler {sampler}: {per_message:,.0f} instructions per 64-byte round trip "
                      f"({a.messages} messages in {seconds:.1f} s under callgrind)", flush=True)
        finally:
            upstream.kill()


if __name__ == "__main__":
    main()

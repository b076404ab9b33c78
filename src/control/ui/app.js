// deskgate admin page: polls /ui/api/state every 2 s and draws it; no libraries.
"use strict";
const $ = (id) => document.getElementById(id);
let csrf = null;
let timer = null;
const previous = new Map(); // session id -> {bytes, t}: for the current rate
const sortState = { sessions: { key: "since", asc: true }, routes: { key: "route", asc: true } };
let lastState = null;

function show(which) {
  $("login").hidden = which !== "login";
  $("dashboard").hidden = which !== "dashboard";
  $("logout").hidden = which !== "dashboard";
}

function human(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return (i === 0 ? bytes : bytes.toFixed(1)) + " " + units[i];
}

function ago(ms, now) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function sorted(rows, table) {
  const { key, asc } = sortState[table];
  return rows.slice().sort((a, b) => {
    const x = a[key] ?? "", y = b[key] ?? "";
    const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return asc ? c : -c;
  });
}

function markSorted(table) {
  for (const th of document.querySelectorAll(`#${table} th[data-key]`)) {
    th.classList.toggle("sorted", th.dataset.key === sortState[table].key);
    th.classList.toggle("asc", th.dataset.key === sortState[table].key && sortState[table].asc);
  }
}

function render(state) {
  lastState = state;
  const now = state.now;
  const sessions = state.sessions.map((s) => {
    const bytes = s.bytes_up + s.bytes_down;
    const p = previous.get(s.id);
    const rate = p && now > p.t ? ((bytes - p.bytes) * 1000) / (now - p.t) : 0;
    const rateDown = p && now > p.t ? ((s.bytes_down - p.down) * 1000) / (now - p.t) : 0;
    const q = s.quality;
    return { ...s, rate, rateDown, browser_rtt: q ? q.browser.rtt_ms : -1,
      desktop_rtt: q && q.desktop ? q.desktop.rtt_ms : -1, backlog: q ? q.backlog_bytes : -1,
      verdict: q ? q.verdict : "" };
  });
  const body = document.querySelector("#sessions tbody");
  body.replaceChildren();
  for (const s of sorted(sessions, "sessions")) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.id;
    cell(tr, s.route);
    cell(tr, s.upstream);
    cell(tr, s.user || "–");
    cell(tr, s.client);
    cell(tr, new Date(s.since).toLocaleTimeString());
    cell(tr, human(s.bytes_up), "num bytes-up");
    cell(tr, human(s.bytes_down), "num bytes-down");
    // With a cap, the desktop -> browser rate against it (the direction the cap holds).
    cell(tr, s.max_rate ? `${human(s.rate)}/s, down ${human(s.rateDown)}/s of ${human(s.max_rate)}/s cap`
      : human(s.rate) + "/s", "num rate");
    cell(tr, ago(s.last_activity, now));
    const q = s.quality;
    cell(tr, q ? `${ms(q.browser.rtt_ms)} ± ${ms(q.browser.rttvar_ms)}, ${q.browser.loss_pct} % lost` : "–", "num browser-rtt");
    cell(tr, q && q.desktop ? ms(q.desktop.rtt_ms) : "–", "num desktop-rtt");
    cell(tr, q ? human(q.backlog_bytes) : "–", "num backlog");
    const v = cell(tr, q ? q.verdict_text : "measuring…", "verdict " + (q ? q.verdict : ""));
    if (q && q.why.length) {
      const why = document.createElement("div");
      why.className = "why";
      why.textContent = q.why.join("; ");
      v.appendChild(why);
    }
    v.title = "browser's network slow: browser RTT ≥ 150 ms, ≥ 2 % retransmitted, or ≥ 512 KiB waiting for the browser; desktop slow: desktop RTT ≥ 50 ms or ≥ 2 % retransmitted";
    const spark = document.createElement("canvas");
    spark.width = 140; spark.height = 30; spark.className = "spark";
    spark.title = "up to the last 2 minutes: browser RTT (blue), desktop RTT (grey), 150 ms line (red)";
    drawSpark(spark, s.quality_history || []);
    tr.appendChild(document.createElement("td")).appendChild(spark);
    const b = document.createElement("button");
    b.className = "disconnect";
    b.textContent = "Disconnect";
    b.onclick = () => disconnect(s);
    tr.appendChild(document.createElement("td")).appendChild(b);
    body.appendChild(tr);
  }
  $("no-sessions").hidden = sessions.length > 0;
  // The demo's session runs over loopback: microseconds, no loss. Say so instead of leaving
  // a reader to wonder why everything is "fine".
  $("loopback-note").hidden = !sessions.some((s) => isLoopback(s.client));
  $("session-count").textContent = `(${sessions.length})`;
  const routes = document.querySelector("#routes tbody");
  routes.replaceChildren();
  for (const r of sorted(state.routes, "routes")) {
    const tr = document.createElement("tr");
    cell(tr, r.route);
    cell(tr, r.kind);
    cell(tr, r.upstream || "–");
    cell(tr, r.health || "–");
    cell(tr, r.last_activity ? ago(Date.parse(r.last_activity), now) : "–");
    routes.appendChild(tr);
  }
  markSorted("sessions");
  markSorted("routes");
  drawChart(state.history);
  $("status").textContent = `${sessions.length} open, updated ${new Date(now).toLocaleTimeString()}`;
}

function ms(v) {
  return v >= 10 ? Math.round(v) + " ms" : v.toFixed(2) + " ms";
}

function isLoopback(ip) {
  return ip === "::1" || ip.startsWith("127.") || ip.startsWith("::ffff:127.");
}

// A session's last two minutes: browser RTT (blue), desktop RTT (grey), the 150 ms line.
function drawSpark(c, points) {
  const g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (points.length < 1) return;
  // At most the last 2 minutes; a younger session's points spread over at least 20 s.
  const end = points[points.length - 1].t;
  const start = Math.max(end - 120 * 1000, Math.min(points[0].t, end - 20 * 1000));
  // The 150 ms line always shows, so a healthy session's lines lie low under it.
  const max = Math.max(200, ...points.map((p) => Math.max(p.browser_rtt_ms, p.desktop_rtt_ms || 0)));
  const x = (t) => 2 + ((t - start) / (end - start || 1)) * (c.width - 4);
  const y = (v) => c.height - 2 - (v / max) * (c.height - 4);
  g.strokeStyle = "#dc2626"; g.lineWidth = 1; g.setLineDash([3, 3]);
  g.beginPath(); g.moveTo(0, y(150)); g.lineTo(c.width, y(150)); g.stroke(); g.setLineDash([]);
  const line = (value, colour) => {
    g.strokeStyle = colour; g.lineWidth = 1.5; g.beginPath();
    let moved = false;
    for (const p of points) {
      const v = value(p);
      if (v == null) continue;
      moved ? g.lineTo(x(p.t), y(v)) : g.moveTo(x(p.t), y(v));
      moved = true;
    }
    if (points.length === 1 && moved) { g.moveTo(2, y(value(points[0]))); g.lineTo(c.width - 2, y(value(points[0]))); }
    g.stroke();
  };
  line((p) => p.desktop_rtt_ms, "#9ca3af");
  line((p) => p.browser_rtt_ms, "#2563eb");
}

function drawChart(history) {
  const c = $("chart"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  if (history.length < 1) return;
  const end = history[history.length - 1].t, start = end - 3600 * 1000;
  const rates = history.map((h, i) => {
    if (i === 0) return 0;
    const dt = (h.t - history[i - 1].t) / 1000;
    return dt > 0 ? Math.max(0, (h.bytes - history[i - 1].bytes) / dt) : 0;
  });
  const maxOpen = Math.max(1, ...history.map((h) => h.open));
  const maxRate = Math.max(1, ...rates);
  const x = (t) => ((t - start) / (end - start)) * (c.width - 40) + 30;
  const line = (values, max, colour) => {
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((h, i) => {
      const y = c.height - 20 - (values[i] / max) * (c.height - 40);
      i === 0 ? g.moveTo(x(h.t), y) : g.lineTo(x(h.t), y);
    });
    g.stroke();
  };
  g.fillStyle = "#6b7280";
  g.font = "11px system-ui";
  g.fillText(`${maxOpen} open`, 2, 14);
  g.fillText(`${human(maxRate)}/s`, c.width - 90, 14);
  g.fillText("-60 min", 30, c.height - 4);
  g.fillText("now", c.width - 30, c.height - 4);
  line(history.map((h) => h.open), maxOpen, "#2563eb");
  line(rates, maxRate, "#f59e0b");
}

async function poll() {
  let r;
  try {
    r = await fetch("api/state", { credentials: "same-origin", cache: "no-store" });
  } catch (e) {
    $("status").textContent = "deskgate unreachable";
    return;
  }
  if (r.status === 401) {
    stop();
    show("login");
    $("status").textContent = "log in with the admin token";
    return;
  }
  if (!r.ok) return;
  const state = await r.json();
  csrf = state.csrf;
  if (lastState) {
    for (const s of lastState.sessions) previous.set(s.id, { bytes: s.bytes_up + s.bytes_down, down: s.bytes_down, t: lastState.now });
  }
  show("dashboard");
  render(state);
}

function start() { if (!timer) { poll(); timer = setInterval(poll, 2000); } }
function stop() { clearInterval(timer); timer = null; }

async function disconnect(s) {
  if (!confirm(`Disconnect ${s.user || s.client} from ${s.upstream} (${s.route})?`)) return;
  const r = await fetch(`api/sessions/${s.id}/disconnect`, {
    method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
  });
  $("status").textContent = r.ok ? `session ${s.id} disconnected` : `disconnect failed: ${r.status}`;
  poll();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("login", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: $("token").value }),
  });
  $("token").value = "";
  if (r.ok) {
    $("login-error").hidden = true;
    csrf = (await r.json()).csrf;
    start();
  } else {
    $("login-error").textContent = "That token is not right.";
    $("login-error").hidden = false;
  }
});

$("logout").addEventListener("click", async () => {
  await fetch("logout", { method: "POST", credentials: "same-origin" });
  stop();
  show("login");
});

for (const table of ["sessions", "routes"]) {
  for (const th of document.querySelectorAll(`#${table} th[data-key]`)) {
    th.addEventListener("click", () => {
      const st = sortState[table];
      st.asc = st.key === th.dataset.key ? !st.asc : true;
      st.key = th.dataset.key;
      if (lastState) render(lastState);
    });
  }
}

start();
